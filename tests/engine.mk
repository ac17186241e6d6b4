# Engine tests (wp/) against an in-memory sink, and end-to-end snapshot
# tests through the public API.
check_LTLIBRARIES = tests/unit/libtestutil.la
tests_unit_libtestutil_la_SOURCES = tests/unit/testutil.c tests/unit/testutil.h
tests_unit_libtestutil_la_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)

check_PROGRAMS += tests/unit/test_engine
TESTS += tests/unit/test_engine
tests_unit_test_engine_SOURCES = tests/unit/test_engine.c
tests_unit_test_engine_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_engine_LDADD = tests/unit/libtestutil.la \
	guest/libwpsguest.la libwpsnap_priv.la $(CHECK_LIBS)

check_PROGRAMS += tests/unit/test_snapshot
TESTS += tests/unit/test_snapshot
tests_unit_test_snapshot_SOURCES = tests/unit/test_snapshot.c
tests_unit_test_snapshot_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_snapshot_LDADD = tests/unit/libtestutil.la \
	guest/libwpsguest.la libwpsnap_priv.la $(CHECK_LIBS)

TESTS += tests/integration/cli.sh
EXTRA_DIST += tests/integration/cli.sh tests/integration/tap.sh

check_PROGRAMS += tests/unit/test_restore
TESTS += tests/unit/test_restore
tests_unit_test_restore_SOURCES = tests/unit/test_restore.c \
	tests/unit/snaputil.c tests/unit/snaputil.h
tests_unit_test_restore_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_restore_LDADD = tests/unit/libtestutil.la \
	guest/libwpsguest.la libwpsnap_priv.la $(CHECK_LIBS)

# The guest-memory reader (base/memsrc.c) the engine, the checkpointer and
# attach share: local, remote anonymous, remote memfd, and its errors.
check_PROGRAMS += tests/unit/test_memsrc
TESTS += tests/unit/test_memsrc
tests_unit_test_memsrc_SOURCES = tests/unit/test_memsrc.c
tests_unit_test_memsrc_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_memsrc_LDADD = tests/unit/libtestutil.la \
	libwpsnap_priv.la $(CHECK_LIBS)
