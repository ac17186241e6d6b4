# Working sets (src/wset.c): the .wset file, the image's written-page
# blob, and a second lazy restore that prefetches the recorded order first.
check_PROGRAMS += tests/unit/test_wset
TESTS += tests/unit/test_wset
tests_unit_test_wset_SOURCES = tests/unit/test_wset.c \
	tests/unit/snaputil.c tests/unit/snaputil.h
tests_unit_test_wset_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_wset_LDADD = tests/unit/libtestutil.la \
	guest/libwpsguest.la libwpsnap_priv.la $(CHECK_LIBS)

TESTS += tests/integration/wset.sh
EXTRA_DIST += tests/integration/wset.sh
