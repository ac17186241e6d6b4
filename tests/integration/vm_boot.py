#!/usr/bin/env python3
# The ground issue 14's VM snapshots stand on, on a real libvirtd started
# by this test (tests/integration/vm_lib.py: private configuration, own
# mount namespace, no system service) running two qguest domains with a
# qcow2 disk each, one with shared (memfd) and one with private RAM:
#
# 1. they boot through libvirt (<os><kernel>, multiboot), find their disk,
#    and run; the RAM backing is what the XML asked for (QMP query-memdev,
#    and QEMU's mappings); QEMU's pid file is where vm_lib says.
# 2. from C (tests/integration/vm_probe): libvirt's monitor answers QMP
#    and HMP, and virDomainQemuMonitorCommandWithFiles passes an fd that
#    QMP getfd accepts.
# 3. disk and memory of one instant: after virsh suspend, the guest's
#    sequence number in RAM (pmemsave) and the newest record on its disk
#    agree (exactly when no write was in flight, else within the one in
#    flight); the disk is read from the image that
#    virsh snapshot-create-as --disk-only --atomic --no-metadata froze,
#    which must stay frozen while the resumed guest writes to the overlay.
#    The snapshot's duration is printed (not judged).
# 4. nothing is left: domains destroyed, libvirtd stopped, no process of
#    its namespace, no mount on the host.
#
# Exit 77 when libvirtd cannot run here (the reason is printed). Prints
# "N passed, N failed".
import os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vm_lib as vl  # noqa: E402
import wpstest  # noqa: E402
from wpstest import check, skip  # noqa: E402

MEM_MIB = 64
KINDS = ("shared", "private")


def note(msg):
    print("# " + msg, flush=True)


def dom(kind):
    return "wpsnap-vm-" + kind


def wait_lines(path, want, timeout=60):
    """Wait until the guest's debugcon file has every line of want; its
    lines. A "qguest:" line is the guest's fatal error."""
    end = time.time() + timeout
    while True:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        bad = [l for l in lines if l.startswith("qguest:")]
        if bad:
            raise RuntimeError("guest failed: %s" % bad)
        if all(any(l.startswith(w) for l in lines) for w in want) or \
                time.time() > end:
            return lines
        time.sleep(0.05)


def boot(lv, tmp):
    for kind in KINDS:
        disk = os.path.join(tmp, kind + ".qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk,
                        "8M"], check=True)
        xml = os.path.join(tmp, kind + ".xml")
        with open(xml, "w") as f:
            f.write(vl.domain_xml(dom(kind), MEM_MIB, kind, disk, "size=16",
                                  os.path.join(tmp, kind + ".dbg")))
        lv.virsh("define", xml)
        t0 = time.monotonic()
        lv.virsh("start", dom(kind))
        note("%s: virsh start %.0f ms" % (dom(kind),
                                          (time.monotonic() - t0) * 1e3))


def shared_memfd_mapped(pid, size):
    """Whether QEMU maps a memfd of size shared (QEMU 7.2 names it
    memory-backend-memfd, newer ones after the backend: not matched)."""
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            f_ = line.split()
            lo, hi = (int(x, 16) for x in f_[0].split("-"))
            if hi - lo == size and f_[1][3] == "s" and len(f_) > 5 and \
                    f_[5].startswith("/memfd:"):
                return True
    return False


def check_running(lv, tmp, kind):
    d = dom(kind)
    lines = wait_lines(os.path.join(tmp, kind + ".dbg"),
                       ("disk ata0", "ready", "P "))
    check("%s: boots from <os><kernel> and finds its IDE disk" % d,
          "ready" in lines and any(l.startswith("disk ata0") for l in lines),
          "debugcon: %s" % lines[:4])
    st = lv.qmp(d, "query-status")["status"]
    check("%s: running" % d, st == "running", st)
    pid = lv.qemu_pid(d)
    exe = os.readlink("/proc/%d/exe" % pid)
    check("%s: pid file %s names QEMU in libvirtd's namespace" % (
        d, lv.pidfile(d)), exe.endswith("qemu-system-x86_64") and
        vl._mnt_ns(pid) == lv.ns, "%d: %s" % (pid, exe))
    mem = lv.qmp(d, "query-memdev")
    share = [m["share"] for m in mem if m["id"] == "pc.ram"]
    memfd = shared_memfd_mapped(pid, MEM_MIB << 20)
    check("%s: RAM backend pc.ram share=%s, memfd mapping %s" % (
        d, kind == "shared", kind == "shared"),
        share == [kind == "shared"] and memfd == (kind == "shared"),
        "query-memdev %s, memfd mapped: %s" % (mem, memfd))
    blocks = lv.hmp(d, "info ramblock")
    check("%s: info ramblock lists pc.ram" % d, "pc.ram" in blocks, blocks)
    return pid


def probe(lv, kind, pid):
    d = dom(kind)
    if not os.path.exists(vl.PROBE):
        skip("%s: C probe" % d, "%s not built (configure found no "
             "libvirt-dev)" % vl.PROBE)
        return
    r = subprocess.run([vl.PROBE, lv.uri, d, str(pid)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=120)
    for l in r.stdout.splitlines():
        note("vm_probe: " + l)
    check("%s: vm_probe (QMP, HMP, WithFiles + getfd from C)" % d,
          r.returncode == 0 and "not ok" not in r.stdout and
          r.stdout.count("ok - ") == 5, "exit %d" % r.returncode)


def one_instant(lv, tmp, kind, timings):
    """Suspend, RAM record, disk-only snapshot, resume; the frozen disk
    agrees with RAM and stays frozen."""
    d = dom(kind)
    base = os.path.join(tmp, kind + ".qcow2")
    ovl = os.path.join(tmp, kind + ".ovl.qcow2")
    r0 = lv.wait_done(d, tmp, 2)
    check("%s: the guest writes its disk sequence" % d,
          r0 and r0["done"] > 2, r0)
    lv.virsh("suspend", d)
    ram = lv.ram_seq(d, tmp)
    t0 = time.monotonic()
    lv.virsh("domstate", d)
    t1 = time.monotonic()
    lv.virsh("snapshot-create-as", d, "--disk-only", "--atomic",
             "--no-metadata", "--diskspec",
             "hda,snapshot=external,file=" + ovl)
    t2 = time.monotonic()
    lv.virsh("resume", d)
    timings.append(((t2 - t1) * 1e3, (t1 - t0) * 1e3))
    note("%s: virsh snapshot-create-as --disk-only --atomic (suspended): "
         "%.0f ms; a bare virsh call: %.0f ms" % (d, (t2 - t1) * 1e3,
                                                 (t1 - t0) * 1e3))
    src = lv.virsh("domblklist", d).stdout
    check("%s: disk-only snapshot: hda now on the overlay" % d, ovl in src,
          src)
    newest, errs = vl.disk_newest(base, tmp)
    check("%s: frozen disk: every ring record whole" % d, not errs, errs)
    if ram["issued"] == ram["done"]:
        check("%s: suspended: newest disk seq == RAM seq %d" % (
            d, ram["done"]), newest == ram["done"],
            "disk %d, RAM %s" % (newest, ram))
    else:
        check("%s: suspended mid-write: newest disk seq %d within RAM's "
              "done %d .. issued %d" % (d, newest, ram["done"],
                                        ram["issued"]),
              ram["done"] <= newest <= ram["issued"] == ram["done"] + 1,
              "disk %d, RAM %s" % (newest, ram))
    after = lv.wait_done(d, tmp, ram["issued"] + 2)
    check("%s: resumed: the guest goes on writing" % d,
          after and after["done"] > ram["issued"] + 2, after)
    again, errs = vl.disk_newest(base, tmp)
    check("%s: the frozen image stays frozen" % d, again == newest and
          not errs, "newest %d then %d %s" % (newest, again, errs))
    lv.virsh("destroy", d)
    top, errs = vl.disk_newest(ovl, tmp)
    check("%s: after destroy, the overlay holds the newer records" % d,
          top >= after["done"] and not errs,
          "overlay newest %d, RAM said %d %s" % (top, after["done"], errs))


def main(lv, tmp):
    pids = []
    timings = []
    try:
        note("private libvirtd up in %.1f s (QEMU capabilities probed "
             "afresh), %s" % (lv.start_s, lv.uri))
        boot(lv, tmp)
        for kind in KINDS:
            pid = check_running(lv, tmp, kind)
            pids.append(pid)
            probe(lv, kind, pid)
        for kind in KINDS:
            one_instant(lv, tmp, kind, timings)
        for kind in KINDS:
            lv.virsh("undefine", dom(kind))
    except SystemExit as e:
        wpstest.ko("main", "terminated (exit %s): cleaning up" % e.code)
        raise
    finally:
        lv.finish(pids)
    if timings:
        note("libvirt disk-only snapshot of a suspended domain: %s ms "
             "(virsh wall clock; a bare virsh call costs %s ms)" % (
                 ", ".join("%.0f" % t for t, _ in timings),
                 ", ".join("%.0f" % b for _, b in timings)))


def top():
    vl.run_test(main, "wpsnap-vm.")


if __name__ == "__main__":
    top()
