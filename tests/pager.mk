# Lazy restore (src/pager.c) against the reference guest.
check_PROGRAMS += tests/unit/test_pager
TESTS += tests/unit/test_pager
tests_unit_test_pager_SOURCES = tests/unit/test_pager.c \
	tests/unit/snaputil.c tests/unit/snaputil.h
tests_unit_test_pager_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_pager_LDADD = tests/unit/libtestutil.la \
	guest/libwpsguest.la libwpsnap_priv.la $(CHECK_LIBS)
