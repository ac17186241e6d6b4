# tests of the stream module (Check). They need root for the tmpfs/ramfs
# mounts of the ENOSPC and O_DIRECT-fallback cases, which skip otherwise.
check_PROGRAMS += \
	tests/unit/test_crc32c \
	tests/unit/test_format \
	tests/unit/test_nbd_chain \
	tests/unit/test_hostile \
	tests/unit/test_writer
TESTS += \
	tests/unit/test_crc32c \
	tests/unit/test_format \
	tests/unit/test_nbd_chain \
	tests/unit/test_hostile \
	tests/unit/test_writer

tests_unit_test_crc32c_SOURCES = tests/unit/test_crc32c.c
tests_unit_test_crc32c_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_crc32c_LDADD = tests/unit/libtestutil.la libwpsnap_priv.la $(CHECK_LIBS)

tests_unit_test_format_SOURCES = tests/unit/test_format.c
tests_unit_test_format_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_format_LDADD = tests/unit/libtestutil.la libwpsnap_priv.la $(CHECK_LIBS)

# The chain table of a checkpoint export (names, encoding, lookup).
tests_unit_test_nbd_chain_SOURCES = tests/unit/test_nbd_chain.c
tests_unit_test_nbd_chain_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_nbd_chain_LDADD = tests/unit/libtestutil.la libwpsnap_priv.la $(CHECK_LIBS)

tests_unit_test_writer_SOURCES = tests/unit/test_writer.c
tests_unit_test_writer_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_writer_LDADD = tests/unit/libtestutil.la libwpsnap_priv.la $(CHECK_LIBS)

# Hostile images (issue 12): every structural lie refused, nothing crashes,
# over-reads or hangs. Uses tools/wpsnap for the inspect escaping case.
tests_unit_test_hostile_SOURCES = tests/unit/test_hostile.c
tests_unit_test_hostile_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_hostile_LDADD = tests/unit/libtestutil.la libwpsnap_priv.la $(CHECK_LIBS)
