# VMs through libvirt (issue 14, docs/VM.md): a private libvirtd started by
# the test (tests/integration/vm_lib.py), qguest domains with a qcow2 disk,
# shared and private RAM; vm_boot.py proves the ground the VM snapshots
# stand on (the guest's disk sequence, libvirt's monitor from C, the
# disk-only snapshot) and skips (77) where libvirtd cannot run.
# vm_snapshot.py: wpsnap vm snapshot/restore round trips on those domains;
# vm_checkpoint.py: checkpoint series of them, every link restored;
# vm_lost.py: libvirtd killed inside a snapshot's pause;
# daemon_vm.py: the same driven through wpsnapd's socket (vm-snapshot,
# vm-restore, their events), imports vm_snapshot.py's domain helpers.
TESTS += tests/integration/vm_boot.py tests/integration/vm_snapshot.py \
	tests/integration/vm_checkpoint.py tests/integration/vm_lost.py \
	tests/integration/daemon_vm.py
EXTRA_DIST += tests/integration/vm_boot.py tests/integration/vm_lib.py \
	tests/integration/vm_snapshot.py tests/integration/vm_checkpoint.py \
	tests/integration/vm_lost.py tests/integration/daemon_vm.py \
	tests/bench/vm.py \
	docs/VM.md
if HAVE_LIBVIRT
check_PROGRAMS += tests/integration/vm_probe
tests_integration_vm_probe_SOURCES = tests/integration/vm_probe.c
tests_integration_vm_probe_CFLAGS = $(AM_CFLAGS) $(LIBVIRT_CFLAGS) \
	$(JANSSON_CFLAGS)
tests_integration_vm_probe_LDADD = $(LIBVIRT_LIBS) $(JANSSON_LIBS)
endif
