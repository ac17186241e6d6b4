# Injected I/O faults (docs/RELIABILITY.md): an LD_PRELOAD shim that fails
# the Nth I/O of one kind (tests/faultinj/faultinj.c), a driver that runs
# the reference guest through a snapshot or a checkpoint series and checks
# it after a failure (tests/faultinj/fault_driver.c), and the walk over
# every I/O of a snapshot, a checkpoint series and eager and lazy restores
# (tests/integration/faults.sh). The shim is built without the sanitizers:
# it is also loaded into the shell of libtool's wrapper scripts.
check_LTLIBRARIES += tests/faultinj/faultinj.la
tests_faultinj_faultinj_la_SOURCES = tests/faultinj/faultinj.c
tests_faultinj_faultinj_la_CFLAGS = -std=gnu11 $(WARN_CFLAGS) -pthread $(NBD_CFLAGS)
tests_faultinj_faultinj_la_LDFLAGS = -module -avoid-version -rpath /nowhere -shared
tests_faultinj_faultinj_la_LIBADD = -ldl

check_PROGRAMS += tests/faultinj/fault_driver
tests_faultinj_fault_driver_SOURCES = tests/faultinj/fault_driver.c
tests_faultinj_fault_driver_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_faultinj_fault_driver_LDADD = tests/unit/libtestutil.la \
	guest/libwpsguest.la libwpsnap_priv.la $(CHECK_LIBS)

TESTS += tests/integration/faults.sh
EXTRA_DIST += tests/integration/faults.sh
