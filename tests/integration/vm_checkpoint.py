#!/usr/bin/env python3
# wpsnap vm checkpoint (issue 14, docs/VM.md) on a real, private libvirtd
# (tests/integration/vm_lib.py) running qguest domains with a qcow2 disk,
# shared (memfd) and private RAM:
#
# 1. a series of 4 checkpoints while the guest writes RAM and disk: the
#    directory holds domain.xml and ckpt-N.wpsnap + ckpt-N.json for each;
#    the domain runs on; nothing of wpsnap stays in QEMU;
# 2. every link of the chain restores (--checkpoint N; the newest without
#    it) into a copy beside the original: the copy's RAM equals the chain
#    flattened up to N page for page, its disk is the one frozen at N and
#    of the same instant as its RAM, and once resumed it continues from
#    that checkpoint's sequence number (no reboot);
#    and a lazy restore of an increment (its chain merged for the pager)
#    graduates to the same RAM;
# 3. --keep 2: the older RAM images are folded into the oldest kept one
#    and their .json files go; the oldest kept one still restores;
# 4. SIGTERM ends a series cleanly (exit 0, the checkpoint under way
#    finished); SIGKILL mid-series leaves the domain running, untraced,
#    unprotected;
# 5. the domain destroyed mid-series: a clear error, the checkpoints
#    before it whole;
# 6. bad input: an unknown domain, a directory holding a series already:
#    a clear error, nothing written, the domain untouched.
#
# Exit 77 when libvirtd cannot run here or wpsnap was built without
# libvirt (the reason is printed). Prints "N passed, N failed".
import glob, json, os, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qemu_lib as ql  # noqa: E402
import vm_lib as vl  # noqa: E402
import wpstest  # noqa: E402
from wpstest import check  # noqa: E402
import vm_snapshot as vs  # noqa: E402

COUNT = 4


def ckpt(d, n):
    return os.path.join(d, "ckpt-%06d" % n)


def series(lv, d, cdir, *extra):
    """wpsnap vm checkpoint --json: (result, reports)."""
    r = vs.wpsnap(lv, "checkpoint", d, "--dir", cdir, "--json", *extra)
    reps = []
    for line in r.stdout.splitlines():
        try:
            reps.append(json.loads(line))
        except ValueError:
            pass
    return r, reps


def flat(tmp, cdir, n, tag):
    """Checkpoint n's RAM as one image (the chain merged), then as a
    guest-physical file: (phys, ranges, the guest's RAM record)."""
    img = os.path.join(tmp, tag + ".wpsnap")
    r = subprocess.run([wpstest.WPSNAP, "merge", ckpt(cdir, n) + ".wpsnap",
                        "-o", img], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("merge: " + r.stderr.strip())
    out = os.path.join(tmp, tag + ".phys")
    ranges = ql.physmem(img, out)
    os.unlink(img)
    with open(out, "rb") as f:
        f.seek(vl.SEQ_RAM_ADDR)
        rec = vl.seq_ram(f.read(64))
    return out, ranges, rec


def take_series(lv, tmp, kind, d, disk):
    pid = lv.qemu_pid(d)
    cdir = os.path.join(tmp, d + "-ckpt")
    r, reps = series(lv, d, cdir, "--interval", "700", "--count",
                     str(COUNT))
    check("%s: wpsnap vm checkpoint --count %d succeeds" % (d, COUNT),
          r.returncode == 0, r.stderr.strip())
    check("%s: %d checkpoints reported, seq 0..%d" % (d, COUNT, COUNT - 1),
          [x["seq"] for x in reps] == list(range(COUNT)), r.stdout)
    for x in reps:
        vs.note("%s: checkpoint %d: pause %.1f ms (suspend %.1f, devices "
                "%.1f, disks %.1f), %.1f MiB dirty" % (
                    d, x["seq"], x["pause_ms"], x["suspend_ms"],
                    x["devices_ms"], x["disks_ms"],
                    x["dirty_bytes"] / 1048576.0))
    want = {"domain.xml"} | {os.path.basename(ckpt(cdir, n)) + e
                             for n in range(COUNT)
                             for e in (".wpsnap", ".json")}
    have = set(os.listdir(cdir)) if os.path.isdir(cdir) else set()
    check("%s: the directory holds domain.xml and ckpt-N.wpsnap/.json "
          "for each" % d, have == want, sorted(have ^ want))
    check("%s: every checkpoint has device state and one disk" % d,
          reps and all(x["devices_bytes"] > 1000 and x["disks"] == 1
                       for x in reps), reps)
    check("%s: increments are smaller than the full image" % d,
          len(reps) == COUNT and all(x["image_data_bytes"] <
                                     reps[0]["image_data_bytes"]
                                     for x in reps[1:]),
          [x.get("image_data_bytes") for x in reps])
    metas = []
    for n in range(COUNT):
        try:
            with open(ckpt(cdir, n) + ".json") as f:
                metas.append(json.load(f)["disks"][0])
        except (OSError, ValueError, KeyError, IndexError):
            metas.append({})
    check("%s: each checkpoint froze the overlay the one before made" % d,
          metas[0].get("frozen") == disk and
          all(metas[n].get("frozen") == metas[n - 1].get("overlay")
              for n in range(1, COUNT)) and
          metas[-1].get("overlay") in lv.virsh("domblklist", d).stdout,
          metas)
    check("%s: running after the series" % d,
          vs.state(lv, d) == "running", vs.state(lv, d))
    vs.clean_of_us(pid, "%s after the series" % d)
    return cdir


def restore_link(lv, tmp, d, cdir, n, newest, lazy=False):
    c = "%s-c%d%s" % (d, n, "-lazy" if lazy else "")
    phys, ranges, rec = flat(tmp, cdir, n, c)
    args = ["restore", cdir, "--name", c, "--paused", "--json"]
    if not newest:
        args += ["--checkpoint", str(n)]
    if lazy:
        args.append("--lazy")
    r = vs.wpsnap(lv, *args)
    check("%s: %srestore of checkpoint %d%s succeeds" % (
        d, "lazy " if lazy else "", n,
        " (the newest, by default)" if newest else ""),
        r.returncode == 0, r.stderr.strip())
    if lazy:
        check("%s: the chain merged for paging is gone" % c,
              not glob.glob(os.path.join(cdir, "*.flat.*")),
              glob.glob(os.path.join(cdir, "*.flat.*")))
    if r.returncode:
        os.unlink(phys)
        return
    vs.same_ram(lv, c, phys, ranges, tmp,
                "%s: RAM against checkpoint %d's chain" % (c, n))
    os.unlink(phys)
    blk = lv.virsh("domblklist", c).stdout.split()
    ovl = [w for w in blk if w.endswith(".qcow2")]
    top, errs = vl.disk_newest(ovl[0], tmp) if ovl else (None, ["no disk"])
    check("%s: its disk whole" % c, not errs, errs)
    if not errs:
        vs.one_instant("%s: checkpoint %d" % (c, n), rec, top)
    lv.virsh("resume", c)
    first = lv.ram_seq(c, tmp)
    check("%s: resumed from checkpoint %d's instant (seq %d, no reboot)" % (
        c, n, rec["done"]), first and first["done"] >= rec["done"] and
        first["writes"] >= rec["writes"], "%s then %s" % (rec, first))
    after = lv.wait_done(c, tmp, rec["issued"] + 2)
    check("%s: goes on writing its disk sequence" % c,
          after and after["done"] > rec["issued"] + 2, after)
    lv.virsh("destroy", c)


def keep_series(lv, tmp, d):
    cdir = os.path.join(tmp, d + "-keep")
    r, reps = series(lv, d, cdir, "--interval", "500", "--count", "4",
                     "--keep", "2")
    check("%s --keep 2: succeeds, 4 checkpoints" % d,
          r.returncode == 0 and len(reps) == 4, r.stderr.strip())
    have = sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []
    want = sorted(["domain.xml"] + [os.path.basename(ckpt(cdir, n)) + e
                                    for n in (2, 3)
                                    for e in (".wpsnap", ".json")])
    check("%s --keep 2: only checkpoints 2 and 3 are left" % d,
          have == want, have)
    restore_link(lv, tmp, d, cdir, 2, False)


def signals(lv, tmp, d):
    pid = lv.qemu_pid(d)
    for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGKILL,
                                                    "SIGKILL")):
        cdir = os.path.join(tmp, "%s-%s" % (d, name))
        p = subprocess.Popen([wpstest.WPSNAP, "vm", "checkpoint", d,
                              "--dir", cdir, "--interval", "300", "--json",
                              "--connect", lv.uri], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        seen = 0
        end = time.time() + 120
        while seen < 2 and time.time() < end:
            line = p.stdout.readline()
            if not line:
                break
            seen += line.startswith("{")
        # SIGKILL lands anywhere, a pause included
        if sig == signal.SIGKILL:
            time.sleep(0.15)
        p.send_signal(sig)
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        if sig == signal.SIGTERM:
            check("%s: ends the series, exit 0" % name, p.returncode == 0,
                  "%s: %s" % (p.returncode, err.strip()))
        ok_ = wpstest.wait_for(lambda: vs.state(lv, d) == "running", 20)
        check("%s after %d checkpoints: the domain runs" % (name, seen),
              seen >= 2 and ok_, "%d, %s" % (seen, vs.state(lv, d)))
        vs.clean_of_us(pid, "%s" % name)
        check("%s: no .partial left but of the checkpoint under way" % name,
              len(glob.glob(os.path.join(cdir, "*.partial"))) <=
              (1 if sig == signal.SIGKILL else 0),
              glob.glob(os.path.join(cdir, "*.partial")))


def domain_gone(lv, tmp, d):
    """The domain destroyed in the middle of a series: wpsnap stops with a
    clear error; the checkpoints before stay whole and restorable."""
    cdir = os.path.join(tmp, d + "-gone")
    p = subprocess.Popen([wpstest.WPSNAP, "vm", "checkpoint", d, "--dir",
                          cdir, "--interval", "300", "--json", "--connect",
                          lv.uri], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    seen = 0
    while seen < 2:
        line = p.stdout.readline()
        if not line:
            break
        seen += line.startswith("{")
    lv.virsh("destroy", d)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    check("domain destroyed mid-series: wpsnap stops, exit 1, saying so",
          p.returncode == 1 and "the series stopped" in err and
          "wpsnap-private" in err, "%s: %s" % (p.returncode, err.strip()))
    r = subprocess.run([wpstest.WPSNAP, "verify", ckpt(cdir, 1) + ".wpsnap"],
                       capture_output=True, text=True)
    check("the checkpoints taken before it are whole (verify ckpt 1)",
          seen >= 2 and r.returncode == 0, r.stdout + r.stderr)
    check("no .partial left of the series",
          not glob.glob(os.path.join(cdir, "*.partial")),
          glob.glob(os.path.join(cdir, "*.partial")))


def bad_input(lv, tmp, d, cdir):
    out = os.path.join(tmp, "nosuch-ckpt")
    r = vs.wpsnap(lv, "checkpoint", "nosuch", "--dir", out, "--count", "1")
    check("unknown domain: refused", r.returncode == 1 and
          "nosuch" in r.stderr, r.stderr.strip())
    check("unknown domain: nothing written",
          not os.path.exists(out) or not os.listdir(out),
          os.listdir(out) if os.path.exists(out) else None)
    before = sorted(os.listdir(cdir))
    r = vs.wpsnap(lv, "checkpoint", d, "--dir", cdir, "--count", "1")
    check("a directory holding a series: refused", r.returncode == 1 and
          "holds a checkpoint series already" in r.stderr, r.stderr.strip())
    check("the series there untouched, the domain running",
          sorted(os.listdir(cdir)) == before and
          vs.state(lv, d) == "running", vs.state(lv, d))
    r = vs.wpsnap(lv, "restore", cdir, "--checkpoint", "99", "--name", "x")
    check("restore of a checkpoint that does not exist: refused",
          r.returncode == 1 and "no checkpoint 99" in r.stderr,
          r.stderr.strip())


def main(lv, tmp):
    pids = []
    try:
        for kind in vs.KINDS:
            d = "wpsnap-" + kind
            disk = vs.boot(lv, tmp, kind, d)
            pids.append(lv.qemu_pid(d))
            cdir = take_series(lv, tmp, kind, d, disk)
            links = range(COUNT) if kind == vs.KINDS[0] else (1,)
            for n in links:
                restore_link(lv, tmp, d, cdir, n, n == COUNT - 1)
            if kind == vs.KINDS[0]:
                # an increment, paged: its chain merged into one image
                restore_link(lv, tmp, d, cdir, 2, False, lazy=True)
                keep_series(lv, tmp, d)
                signals(lv, tmp, d)
                bad_input(lv, tmp, d, cdir)
                lv.virsh("destroy", d)
            else:
                domain_gone(lv, tmp, d)
    except SystemExit as e:
        wpstest.ko("main", "terminated (exit %s): cleaning up" % e.code)
        raise
    finally:
        lv.finish(pids)


if __name__ == "__main__":
    vl.run_vm_test(main, "wpsnap-vmckpt.")
