#!/usr/bin/env python3
# wpsnap vm snapshot / restore (issue 14, docs/VM.md) on a real, private
# libvirtd (tests/integration/vm_lib.py) running qguest domains with a
# qcow2 disk, shared (memfd) and private RAM:
#
# 1. a paused domain: the snapshot leaves it paused, and the image's RAM
#    equals QEMU's pmemsave of the same instant, page for page;
# 2. a running domain: one pause, the guest runs on; the frozen disk and
#    the image's RAM are of one instant (the guest's disk sequence:
#    RAM's done <= newest on disk <= RAM's issued); nothing of wpsnap
#    stays in QEMU (no tracer, no userfaultfd registration);
# 3. restore --paused --name COPY beside the original: the copy's RAM
#    equals the image page for page, its disk is the frozen one, and once
#    resumed it continues from the snapshot's sequence number (no
#    reboot), its disk and RAM still of one instant;
# 3b. restore --lazy of the shared-RAM domain: paused, its RAM once
#    graduated equals the image page for page; running, the guest runs
#    while its RAM arrives and continues from the snapshot's instant;
# 4. wpsnap killed at each step of a snapshot: the domain runs again
#    (the watchdog's virsh resume), nothing traced or protected, nothing
#    published under the final name;
# 5. two private RAM blocks of one size (two NUMA nodes): told apart,
#    the image equals pmemsave over both, the restore equals the image;
# 6. bad input: an unknown or shut-off domain, an existing directory, a
#    restore over a running domain, a machine-type mismatch: a clear
#    error, the domain untouched, nothing left behind.
#
# Exit 77 when libvirtd cannot run here or wpsnap was built without
# libvirt (the reason is printed). Prints "N passed, N failed".
import glob, json, os, shutil, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qemu_lib as ql  # noqa: E402
import vm_lib as vl  # noqa: E402
import wpstest  # noqa: E402
from wpstest import check  # noqa: E402

MEM_MIB = 64
KINDS = ("shared", "private")
KILL_POINTS = ("attached", "stopped", "frozen", "copying")


def note(msg):
    print("# " + msg, flush=True)


def wpsnap(lv, *args, env=None, timeout=300):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([wpstest.WPSNAP, "vm"] + list(args) +
                          ["--connect", lv.uri], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=e,
                          timeout=timeout)


def state(lv, d):
    return lv.virsh("domstate", d, check=False).stdout.strip()


def image_ram(snap, tmp, tag):
    """The snapshot's guest-physical memory as a raw file, its RAM ranges
    and its disk-sequence record."""
    out = os.path.join(tmp, tag + ".phys")
    ranges = ql.physmem(os.path.join(snap, "memory.wps"), out)
    with open(out, "rb") as f:
        f.seek(vl.SEQ_RAM_ADDR)
        rec = vl.seq_ram(f.read(64))
    return out, ranges, rec


def same_ram(lv, d, phys, ranges, tmp, what):
    ref = os.path.join(tmp, d + ".pmem")
    lv.qmp(d, "pmemsave", val=0, size=MEM_MIB << 20, filename=ref)
    low = [(a, min(b, MEM_MIB << 20)) for a, b in ranges
           if a < MEM_MIB << 20]
    pages, bad = ql.compare_pages(ref, phys, low)
    check("%s: %d pages, every one equal" % (what, pages),
          pages >= (MEM_MIB << 20) // 4096 - 128 and not bad,
          "%d pages differ, first at %s" % (len(bad), [hex(b) for b in
                                                     bad[:4]]))
    os.unlink(ref)


def one_instant(what, rec, newest):
    check("%s: disk and RAM of one instant (RAM done %d <= disk %d <= "
          "issued %d)" % (what, rec["done"], newest, rec["issued"]),
          rec["done"] <= newest <= rec["issued"] <= rec["done"] + 1,
          "RAM %s, disk %d" % (rec, newest))


def clean_of_us(pid, what):
    ok_ = wpstest.wait_for(lambda: wpstest.tracer(pid) == 0 and
                           wpstest.uffd_vmas(pid) == 0, 20)
    check("%s: QEMU not traced, no userfaultfd registration left" % what,
          ok_, "tracer %s, uffd vmas %s" % (wpstest.tracer(pid),
                                             wpstest.uffd_vmas(pid)))


def boot(lv, tmp, kind, d):
    disk = os.path.join(tmp, d + ".qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "8M"],
                   check=True)
    xml = os.path.join(tmp, d + ".xml")
    with open(xml, "w") as f:
        f.write(vl.domain_xml(d, MEM_MIB, kind, disk, "size=16"))
    lv.virsh("create", xml)
    r = lv.wait_done(d, tmp, 2)
    check("%s: boots and writes its disk sequence" % d,
          r and r["done"] > 2, r)
    return disk


def paused_snapshot(lv, tmp, kind, d, disk):
    lv.virsh("suspend", d)
    snap = os.path.join(tmp, d + "-paused")
    r = wpsnap(lv, "snapshot", d, "-o", snap)
    check("%s paused: wpsnap vm snapshot succeeds" % d, r.returncode == 0,
          r.stderr.strip())
    check("%s paused: left paused" % d, state(lv, d) == "paused",
          state(lv, d))
    phys, ranges, rec = image_ram(snap, tmp, d + "-paused")
    same_ram(lv, d, phys, ranges, tmp,
             "%s paused: image RAM against pmemsave" % d)
    with open(os.path.join(snap, "vm.json")) as f:
        meta = json.load(f)
    dk = meta["disks"][0]
    check("%s paused: vm.json names the frozen disk and its overlay" % d,
          meta["format"] == "wpsnap-vm-1" and dk["frozen"] == disk and
          dk["snapshot"] and os.path.exists(dk["overlay"]) and
          dk["overlay"] in lv.virsh("domblklist", d).stdout, meta)
    newest, errs = vl.disk_newest(disk, tmp)
    check("%s paused: frozen disk whole" % d, not errs, errs)
    one_instant("%s paused" % d, rec, newest)
    lv.virsh("resume", d)
    os.unlink(phys)


def live_snapshot(lv, tmp, kind, d):
    pid = lv.qemu_pid(d)
    snap = os.path.join(tmp, d + "-live")
    r = wpsnap(lv, "snapshot", d, "-o", snap, "--json")
    check("%s live: wpsnap vm snapshot succeeds" % d, r.returncode == 0,
          r.stderr.strip())
    rep = json.loads(r.stdout)
    note("%s live: pause %.1f ms (suspend %.1f, devices %.1f, disks %.1f, "
         "freeze %.1f, resume %.1f), total %.0f ms, devices %d bytes" % (
             d, rep["pause_ms"], rep["suspend_ms"], rep["devices_ms"],
             rep["disks_ms"], rep["freeze_ms"], rep["resume_ms"],
             rep["total_ms"], rep["devices_bytes"]))
    check("%s live: one disk, device state, guest RAM saved" % d,
          rep["was_running"] and rep["disks"] == 1 and
          rep["devices_bytes"] > 0 and rep["ram_bytes"] >= MEM_MIB << 20,
          rep)
    check("%s live: DIR has memory.wps, vm.json, domain.xml; no .partial"
          % d, sorted(os.listdir(snap)) == ["domain.xml", "memory.wps",
                                            "vm.json"] and
          not os.path.exists(snap + ".partial"), os.listdir(snap))
    phys, ranges, rec = image_ram(snap, tmp, d + "-live")
    with open(os.path.join(snap, "vm.json")) as f:
        meta = json.load(f)
    frozen = meta["disks"][0]["frozen"]
    newest, errs = vl.disk_newest(frozen, tmp)
    check("%s live: frozen disk whole" % d, not errs, errs)
    one_instant("%s live" % d, rec, newest)
    check("%s live: running" % d, state(lv, d) == "running", state(lv, d))
    after = lv.wait_done(d, tmp, rec["issued"] + 2)
    check("%s live: the guest goes on" % d,
          after and after["done"] > rec["issued"] + 2, after)
    clean_of_us(pid, "%s live" % d)
    return snap, phys, ranges, rec, newest


def restored(lv, tmp, kind, d, snap, phys, ranges, rec, newest):
    c = d + "-copy"
    r = wpsnap(lv, "restore", snap, "--name", c, "--paused", "--json")
    check("%s: wpsnap vm restore --name %s --paused succeeds" % (d, c),
          r.returncode == 0, r.stderr.strip())
    if r.returncode:
        return
    rep = json.loads(r.stdout)
    note("%s: restore %.0f ms (domain started %.0f, RAM %.0f, device state "
         "%.0f)" % (c, rep["total_ms"], rep["start_ms"], rep["fill_ms"],
                    rep["devices_ms"]))
    check("%s: paused, the original still running" % c,
          state(lv, c) == "paused" and state(lv, d) == "running",
          "%s / %s" % (state(lv, c), state(lv, d)))
    same_ram(lv, c, phys, ranges, tmp, "%s: restored RAM against the image"
             % c)
    blk = lv.virsh("domblklist", c).stdout.split()
    ovl = [w for w in blk if w.endswith(".qcow2")]
    top, errs = vl.disk_newest(ovl[0], tmp) if ovl else (None, ["no disk"])
    check("%s: its disk is a new overlay on the frozen image (newest %s)"
          % (c, newest), ovl and "-copy-hda.wps-" in ovl[0] and
          top == newest and not errs, "%s: %s %s" % (ovl, top, errs))
    lv.virsh("resume", c)
    first = lv.ram_seq(c, tmp)
    check("%s: resumed from the snapshot's instant (seq %d, no reboot)" % (
        c, rec["done"]), first and first["done"] >= rec["done"] and
        first["writes"] >= rec["writes"], "%s then %s" % (rec, first))
    after = lv.wait_done(c, tmp, rec["issued"] + 3)
    check("%s: goes on writing its disk sequence" % c,
          after and after["done"] > rec["issued"] + 3, after)
    lv.virsh("suspend", c)
    now = lv.ram_seq(c, tmp)
    top, errs = vl.disk_newest(ovl[0], tmp)
    check("%s: its disk whole" % c, not errs, errs)
    one_instant("%s suspended" % c, now, top)
    lv.virsh("destroy", c)


def lazy_restored(lv, tmp, d, snap, phys, ranges, rec):
    """restore --lazy, paused (the RAM, once graduated, equals the image
    page for page: the pages QEMU had written itself were replaced) and
    running (the guest runs while its RAM arrives, and continues from
    the snapshot's instant)."""
    for paused in (True, False):
        c = d + ("-lazyp" if paused else "-lazy")
        r = wpsnap(lv, "restore", snap, "--name", c, "--lazy", "--json",
                   *(["--paused"] if paused else []))
        check("%s: wpsnap vm restore --lazy%s succeeds" % (
            c, " --paused" if paused else ""), r.returncode == 0,
            r.stderr.strip())
        if r.returncode:
            continue
        rep = json.loads(r.stdout)
        note("%s: running after %.0f ms (domain started %.0f, device "
             "state %.0f), all RAM in %.0f ms later; %d faults, p99 %.0f "
             "us" % (c, rep["total_ms"], rep["start_ms"],
                     rep["devices_ms"], rep["graduate_ms"], rep["faults"],
                     rep["fault_p99_us"]))
        check("%s: the shared RAM was paged (%d MiB)" % (
            c, rep["lazy_bytes"] >> 20), rep["lazy"] and
            rep["lazy_bytes"] >= MEM_MIB << 20, rep)
        if paused:
            same_ram(lv, c, phys, ranges, tmp,
                     "%s: RAM after graduation against the image" % c)
            lv.virsh("resume", c)
        else:
            check("%s: QEMU's faults were served while it ran" % c,
                  rep["faults"] > 0, rep)
        first = lv.ram_seq(c, tmp)
        check("%s: continues from the snapshot's instant (seq %d, no "
              "reboot)" % (c, rec["done"]), first and
              first["done"] >= rec["done"] and
              first["writes"] >= rec["writes"], "%s then %s" % (rec, first))
        after = lv.wait_done(c, tmp, rec["issued"] + 3)
        check("%s: goes on writing its disk sequence" % c,
              after and after["done"] > rec["issued"] + 3, after)
        clean_of_us(lv.qemu_pid(c), c)
        lv.virsh("destroy", c)


def numa(lv, tmp):
    """Two private RAM blocks of one size (two NUMA nodes), told apart by
    asking QEMU where each is (gpa2hva): a paused snapshot equals
    pmemsave over both nodes, and a restored copy equals the image."""
    d = "wpsnap-numa"
    disk = os.path.join(tmp, d + ".qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "8M"],
                   check=True)
    xml = os.path.join(tmp, d + ".xml")
    with open(xml, "w") as f:
        f.write(vl.domain_xml(d, MEM_MIB, "private", disk, "size=40",
                              numa=True))
    lv.virsh("create", xml)
    pid = lv.qemu_pid(d)
    r = lv.wait_done(d, tmp, 2)
    check("%s: boots with two NUMA nodes, writes its disk sequence" % d,
          r and r["done"] > 2, r)
    blocks = lv.hmp(d, "info ramblock")
    check("%s: two RAM blocks of one size" % d, "ram-node0" in blocks and
          "ram-node1" in blocks, blocks)
    lv.virsh("suspend", d)
    snap = os.path.join(tmp, d + "-snap")
    r = wpsnap(lv, "snapshot", d, "-o", snap)
    check("%s: snapshot succeeds (not 'cannot tell which')" % d,
          r.returncode == 0, r.stderr.strip())
    if r.returncode == 0:
        phys, ranges, rec = image_ram(snap, tmp, d)
        with open(phys, "rb") as f:
            lo = f.read(MEM_MIB << 19)
            hi = f.read(MEM_MIB << 19)
        check("%s: the guest's data differ between the nodes (a swap "
              "would show)" % d, lo != hi and any(hi), "")
        same_ram(lv, d, phys, ranges, tmp,
                 "%s: image RAM against pmemsave, both nodes" % d)
        c = d + "-copy"
        r = wpsnap(lv, "restore", snap, "--name", c, "--paused")
        check("%s: restore succeeds" % c, r.returncode == 0,
              r.stderr.strip())
        if r.returncode == 0:
            same_ram(lv, c, phys, ranges, tmp,
                     "%s: restored RAM against the image, both nodes" % c)
            lv.virsh("destroy", c)
        os.unlink(phys)
    lv.virsh("destroy", d)
    return pid


def killed(lv, tmp, d):
    pid = lv.qemu_pid(d)
    for point in KILL_POINTS:
        snap = os.path.join(tmp, "%s-kill-%s" % (d, point))
        r = wpsnap(lv, "snapshot", d, "-o", snap,
                   env={"WPSNAP_QEMU_TEST_KILL": point})
        check("%s: wpsnap killed at %s" % (d, point), r.returncode == -9,
              "exit %d: %s" % (r.returncode, r.stderr.strip()))
        running = wpstest.wait_for(lambda: state(lv, d) == "running", 30)
        check("%s killed at %s: the domain runs again" % (d, point),
              running, state(lv, d))
        clean_of_us(pid, "%s killed at %s" % (d, point))
        check("%s killed at %s: nothing published under the final name" %
              (d, point), not os.path.exists(snap), os.listdir(tmp))
        if point == KILL_POINTS[0]:
            r = wpsnap(lv, "snapshot", d, "-o", snap)
            check("%s: a .partial left by a death is refused, named" % d,
                  r.returncode == 1 and snap + ".partial exists" in r.stderr
                  and state(lv, d) == "running", r.stderr.strip())
        shutil.rmtree(snap + ".partial", ignore_errors=True)
    seq = lv.ram_seq(d, tmp)
    after = lv.wait_done(d, tmp, seq["done"] + 2)
    check("%s: after every death the guest goes on" % d,
          after and after["done"] > seq["done"] + 2, after)


def bad_input(lv, tmp, d, snap):
    def refused(what, r, text):
        check("%s: refused, %r" % (what, text), r.returncode == 1 and
              text in r.stderr and state(lv, d) == "running",
              "exit %d: %s" % (r.returncode, r.stderr.strip()))

    out = os.path.join(tmp, "bad")
    refused("unknown domain", wpsnap(lv, "snapshot", "nosuch", "-o", out),
            "domain nosuch not found")
    check("unknown domain: nothing written", not os.path.exists(out) and
          not os.path.exists(out + ".partial"), os.listdir(tmp))
    refused("existing directory", wpsnap(lv, "snapshot", d, "-o", snap),
            "exists already")
    xml = os.path.join(tmp, "off.xml")
    with open(xml, "w") as f:
        f.write(vl.domain_xml("wpsnap-off", 16, "private"))
    lv.virsh("define", xml)
    refused("shut-off domain", wpsnap(lv, "snapshot", "wpsnap-off", "-o",
                                      out), "domain wpsnap-off is not "
            "running")
    lv.virsh("undefine", "wpsnap-off")
    qcow = set(glob.glob(os.path.join(tmp, "*.qcow2")))
    refused("restore over the running domain", wpsnap(lv, "restore", snap),
            "domain %s is running" % d)
    bad = os.path.join(tmp, "bad-machine")
    shutil.copytree(snap, bad)
    with open(os.path.join(bad, "domain.xml")) as f:
        x = f.read()
    with open(os.path.join(bad, "domain.xml"), "w") as f:
        f.write(x.replace("machine='pc-i440fx-7.2'",
                          "machine='pc-i440fx-7.1'"))
    refused("machine-type mismatch", wpsnap(lv, "restore", bad, "--name",
                                            "wpsnap-bad"),
            "a device state loads only into the same version and machine")
    check("mismatch: no domain, no overlay left",
          "wpsnap-bad" not in lv.virsh("list", "--all", "--name").stdout and
          set(glob.glob(os.path.join(tmp, "*.qcow2"))) == qcow,
          set(glob.glob(os.path.join(tmp, "*.qcow2"))) - qcow)


def main(lv, tmp):
    pids = []
    try:
        for kind in KINDS:
            d = "wpsnap-" + kind
            disk = boot(lv, tmp, kind, d)
            pids.append(lv.qemu_pid(d))
            paused_snapshot(lv, tmp, kind, d, disk)
            live = live_snapshot(lv, tmp, kind, d)
            restored(lv, tmp, kind, d, *live)
            if kind == KINDS[0]:
                lazy_restored(lv, tmp, d, live[0], live[1], live[2],
                              live[3])
                killed(lv, tmp, d)
                bad_input(lv, tmp, d, live[0])
            lv.virsh("destroy", d)
        pids.append(numa(lv, tmp))
    except SystemExit as e:
        wpstest.ko("main", "terminated (exit %s): cleaning up" % e.code)
        raise
    finally:
        lv.finish(pids)


if __name__ == "__main__":
    vl.run_vm_test(main, "wpsnap-vmsnap.")
