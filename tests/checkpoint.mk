# Periodic checkpoints: write tracker, chains, merge, retention.
check_PROGRAMS += tests/unit/test_checkpoint
TESTS += tests/unit/test_checkpoint
tests_unit_test_checkpoint_SOURCES = tests/unit/test_checkpoint.c
tests_unit_test_checkpoint_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_checkpoint_LDADD = tests/unit/libtestutil.la \
	guest/libwpsguest.la libwpsnap_priv.la $(CHECK_LIBS)
TESTS += tests/integration/checkpoint.sh
EXTRA_DIST += tests/integration/checkpoint.sh
