# tests of the guest module
check_PROGRAMS += tests/unit/test_guest
TESTS += tests/unit/test_guest
tests_unit_test_guest_SOURCES = tests/unit/test_guest.c
tests_unit_test_guest_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_guest_LDADD = tests/unit/libtestutil.la guest/libwpsguest.la libwpsnap_priv.la $(CHECK_LIBS)
