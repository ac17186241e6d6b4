#!/usr/bin/env python3
# wpsnap vm snapshot/restore against what libvirt offers, on the same
# domain in the same run (issue 14; the table of docs/VM.md, "Figures"):
#
# - wpsnap's pause against libvirt's disk-only snapshot alone (the part of
#   our pause that is libvirt's, timed inside it) and against
#   `virsh snapshot-create-as --memspec` without --live (the guest paused
#   for the whole memory write): pause, total time, memory file size;
# - wpsnap's memory file against the guest's populated RAM;
# - wpsnap vm restore against `virsh restore` of a `virsh save` of the
#   same domain (time to a running guest), page cache dropped before each;
# - wpsnap vm restore --lazy: time to a running guest (and after the
#   domain started), and to all RAM in place, against the eager restore
#   of the same snapshot (--lazy-only: just these, for large guests).
#
# A private libvirtd (tests/integration/vm_lib.py), a qguest domain with
# shared (memfd) or private RAM writing its pages at full speed. Not a
# test: it prints figures and ratios. Needs root, libvirtd, QEMU.
#   tests/bench/vm.py [--mem MIB] [--ram shared|private] [--runs N] [--json]
#                     [--lazy-only]
import argparse, json, os, shutil, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import vm_lib as vl  # noqa: E402
import wpstest  # noqa: E402


def ms(t0):
    return (time.monotonic() - t0) * 1e3


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else float("nan")


def drop_caches():
    """Both restores read a cold file, as a restore some time after the
    snapshot does (wpsnap's image, written O_DIRECT, is never cached)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def wpsnap(lv, *args, env=None):
    r = subprocess.run([wpstest.WPSNAP, "vm"] + list(args) +
                       ["--connect", lv.uri, "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=900,
                       env=dict(os.environ, **(env or {})))
    for line in r.stderr.splitlines():
        print("# " + line, file=sys.stderr)
    if r.returncode:
        raise RuntimeError("wpsnap vm %s: %s" % (args[0], r.stderr.strip()))
    return json.loads(r.stdout)


def bench(lv, tmp, a):
    d = "bench"
    disk = os.path.join(tmp, "bench.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"],
                   check=True)
    with open(os.path.join(tmp, "bench.xml"), "w") as f:
        f.write(vl.domain_xml(d, a.mem, a.ram, disk))
    lv.virsh("create", os.path.join(tmp, "bench.xml"))
    lv.wait_done(d, tmp, 2)
    time.sleep(a.mem / 256.0)        # let the guest touch its RAM
    rows = {k: [] for k in ("w_pause", "w_disks", "w_total", "w_file",
                            "w_pop", "l_pause", "l_file", "w_restore",
                            "w_rstart", "w_rfill", "w_rdev",
                            "z_run", "z_after_start", "z_grad",
                            "v_save", "v_restore")}
    for i in range(a.runs):
        snap = os.path.join(tmp, "w%d" % i)
        r = wpsnap(lv, "snapshot", d, "-o", snap)
        rows["w_pause"].append(r["pause_ms"])
        rows["w_disks"].append(r["disks_ms"])
        rows["w_total"].append(r["total_ms"])
        rows["w_file"].append(os.stat(os.path.join(snap, "memory.wps"))
                              .st_blocks * 512)
        rows["w_pop"].append(r["populated_bytes"])
        c = "lazy%d" % i
        drop_caches()
        r = wpsnap(lv, "restore", snap, "--name", c, "--lazy",
                   env=a.restore_env)
        rows["z_run"].append(r["total_ms"])
        rows["z_after_start"].append(r["total_ms"] - r["start_ms"])
        rows["z_grad"].append(r["graduate_ms"])
        lv.virsh("destroy", c)
        c = "copy%d" % i
        drop_caches()
        r = wpsnap(lv, "restore", snap, "--name", c, env=a.restore_env)
        rows["w_restore"].append(r["total_ms"])
        rows["w_rstart"].append(r["start_ms"])
        rows["w_rfill"].append(r["fill_ms"])
        rows["w_rdev"].append(r["devices_ms"])
        lv.virsh("destroy", c)
        shutil.rmtree(snap)
        if a.lazy_only:
            continue
        # libvirt's own: memory + disks, guest paused for all of it
        mem = os.path.join(tmp, "l%d.mem" % i)
        t0 = time.monotonic()
        lv.virsh("snapshot-create-as", d, "l%d" % i, "--no-metadata",
                 "--memspec", "file=%s,snapshot=external" % mem,
                 "--diskspec", "hda,snapshot=external,file=%s" %
                 os.path.join(tmp, "l%d.qcow2" % i), timeout=900)
        rows["l_pause"].append(ms(t0))
        rows["l_file"].append(os.stat(mem).st_blocks * 512)
        os.unlink(mem)
    for i in range(0 if a.lazy_only else a.runs):
        save = os.path.join(tmp, "save%d" % i)
        t0 = time.monotonic()
        lv.virsh("save", d, save, timeout=900)
        rows["v_save"].append(ms(t0))
        drop_caches()
        t0 = time.monotonic()
        lv.virsh("restore", save, timeout=900)
        rows["v_restore"].append(ms(t0))
        os.unlink(save)
    lv.virsh("destroy", d)
    m = {k: median(v) if v else float("nan") for k, v in rows.items()}
    out = {
        "mem_mib": a.mem, "ram": a.ram, "runs": a.runs, "raw": rows,
        "pause_ms": m["w_pause"], "libvirt_disk_only_ms": m["w_disks"],
        "pause_over_disk_only_ms": m["w_pause"] - m["w_disks"],
        "libvirt_memspec_pause_ms": m["l_pause"],
        "pause_ratio_vs_memspec": m["w_pause"] / m["l_pause"],
        "total_ms": m["w_total"],
        "memory_file_over_populated": m["w_file"] / m["w_pop"],
        "memory_file_vs_memspec_file": m["w_file"] / m["l_file"],
        "restore_ms": m["w_restore"], "virsh_restore_ms": m["v_restore"],
        "restore_speedup_vs_virsh": m["v_restore"] / m["w_restore"],
        "lazy_running_ms": m["z_run"],
        "lazy_running_after_domain_start_ms": m["z_after_start"],
        "lazy_graduate_ms": m["z_grad"],
        "lazy_running_vs_eager_restore": m["z_run"] / m["w_restore"],
    }
    if a.json:
        print(json.dumps(out))
        return
    print("%d MiB %s RAM, %d runs, medians:" % (a.mem, a.ram, a.runs))
    print("  wpsnap pause          %8.1f ms (libvirt's disk-only snapshot "
          "inside it %.1f ms: +%.1f ms)" % (m["w_pause"], m["w_disks"],
                                            m["w_pause"] - m["w_disks"]))
    print("  virsh --memspec pause %8.1f ms  (wpsnap %.4fx)" % (
        m["l_pause"], m["w_pause"] / m["l_pause"]))
    print("  wpsnap total          %8.1f ms" % m["w_total"])
    print("  memory file / populated %.4f; wpsnap file / --memspec file "
          "%.3f" % (m["w_file"] / m["w_pop"], m["w_file"] / m["l_file"]))
    print("  restore: wpsnap %.1f ms (domain start %.1f, RAM %.1f, device "
          "state %.1f), virsh restore %.1f ms (%.2fx faster)" % (
              m["w_restore"], m["w_rstart"], m["w_rfill"], m["w_rdev"],
              m["v_restore"], m["v_restore"] / m["w_restore"]))
    print("  lazy restore: running after %.1f ms (%.1f after the domain "
          "started; %.2fx the eager restore), all RAM in %.1f ms later" % (
              m["z_run"], m["z_after_start"], m["z_run"] / m["w_restore"],
              m["z_grad"]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mem", type=int, default=512)
    p.add_argument("--ram", choices=("shared", "private"), default="shared")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--lazy-only", action="store_true",
                   help="snapshot, eager and lazy restore only (no "
                   "libvirt --memspec, no virsh save/restore)")
    p.add_argument("--debug", action="store_true",
                   help="the restore's debug log (where its time went)")
    a = p.parse_args()
    a.restore_env = {"WPSNAP_LOG": "debug"} if a.debug else {}
    tmp = tempfile.mkdtemp(prefix="wpsnap-vmbench.")
    lv = vl.Libvirtd(tmp)
    try:
        lv.start()
        bench(lv, tmp, a)
    except vl.Unavailable as e:
        print("vm.py: libvirtd cannot run here: %s" % e, file=sys.stderr)
        sys.exit(77)
    finally:
        lv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
