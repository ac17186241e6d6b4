#!/usr/bin/env python3
# vm-snapshot and vm-restore through wpsnapd (docs/PROTOCOL.md, "VMs
# through libvirt"): a management layer drives a libvirt domain's
# snapshot and restore over the daemon's socket, on a real, private
# libvirtd (tests/integration/vm_lib.py) running a qguest domain with a
# qcow2 disk and shared RAM:
#
# 1. vm-snapshot of the running domain: the reply is a token, then
#    WPS_VM_SNAPSHOT_FROZEN (the pause and its parts) and
#    WPS_VM_SNAPSHOT_COMPLETED (the RAM streamed) with the right fields,
#    in that order; the directory is complete, its frozen disk and RAM of
#    one instant; the domain runs on, QEMU not traced and unprotected; a
#    second vm-snapshot of that domain sent meanwhile is refused;
#    query-vm gives the summary;
# 2. vm-restore under a new name, paused: WPS_VM_RESTORE_COMPLETED, the
#    copy's RAM record is the snapshot's exactly (the instant, no
#    reboot); and running: the copy runs on from that instant while the
#    original runs too;
# 3. an unknown domain, an existing directory: WPS_VM_SNAPSHOT_FAILED
#    with the library's words and ENOENT, EEXIST; nothing written, the
#    domain untouched; malformed requests are error replies;
# 4. a client that is not root (a member of --group): vm-snapshot and
#    vm-restore are refused (root only: they act on any domain as root),
#    nothing appears in the root-only directory it named, query-vm works;
# 5. wpsnapd killed while the domain is suspended for a vm-snapshot: the
#    domain runs again, unprotected, nothing published;
# 5b. vm-checkpoint until vm-stop: an event per durable checkpoint, then
#    COMPLETED with their count; a vm-snapshot of that domain meanwhile
#    is refused; the newest checkpoint restores; the domain runs on;
# 6. quit while a vm-snapshot runs: the daemon waits for it and exits 0,
#    the domain runs on, unprotected, the directory complete.
#
# Exit 77 when libvirtd cannot run here, or when wpsnap was built
# without libvirt (after checking that wpsnapd then refuses both commands
# clearly). Prints "N passed, N failed".
import json, os, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vm_lib as vl  # noqa: E402
import vm_snapshot as vs  # noqa: E402  (its domain helpers)
import wpstest  # noqa: E402
from wpstest import Conn, check, err, err_class  # noqa: E402

VM_END = ("WPS_VM_SNAPSHOT_COMPLETED", "WPS_VM_SNAPSHOT_FAILED",
          "WPS_VM_RESTORE_COMPLETED", "WPS_VM_RESTORE_FAILED",
          "WPS_VM_CHECKPOINT_COMPLETED", "WPS_VM_CHECKPOINT_FAILED")
PAUSE_PARTS = ("suspend-ns", "devices-ns", "disks-ns", "freeze-ns",
               "resume-ns")


def daemon_dir():
    """The daemon's socket and log, and a root-only directory, in a
    directory a group member can reach (a test's temp dir is 0700)."""
    d = tempfile.mkdtemp(prefix="wpsnapd-vm.", dir="/var/tmp")
    os.chmod(d, 0o755)
    return d


def events_of(c, token, last, timeout=120):
    """Every event of job token, in arrival order, up to and including
    the one called last (or any end of a VM job: last None)."""
    got = []
    while True:
        e = None
        for i, m in enumerate(c.events):
            if m["data"].get("token") == token:
                e = c.events.pop(i)
                break
        if e is None:
            m = c.recv(timeout)
            if "event" in m:
                c.events.append(m)
            continue
        got.append(e)
        if e["event"] == last or (last is None and e["event"] in VM_END):
            return got


def snapshot(lv, tmp, c, d, pid):
    snap = os.path.join(tmp, d + "-snap")
    args = {"domain": d, "dir": snap, "connect": lv.uri}
    # Both requests in one write: the second is handled while the first
    # job is still running (jobs are reaped only after the input).
    n1 = c.send("vm-snapshot", args)
    n2 = c.send("vm-snapshot", dict(args, dir=snap + "-2"))
    r1, r2 = c.reply(), c.reply()
    check("vm-snapshot: the reply is a token", r1.get("id") == n1 and
          isinstance(r1.get("return", {}).get("token"), int), r1)
    check("a second vm-snapshot of the domain meanwhile: refused, naming it",
          r2.get("id") == n2 and err_class(r2) == "GenericError" and
          "domain '%s' already has a vm-snapshot running" % d in err(r2), r2)
    if "return" not in r1:
        return None
    token = r1["return"]["token"]
    evs = events_of(c, token, None)
    names = [e["event"] for e in evs]
    check("vm-snapshot: FROZEN then COMPLETED, nothing else",
          names == ["WPS_VM_SNAPSHOT_FROZEN", "WPS_VM_SNAPSHOT_COMPLETED"],
          names)
    if names != ["WPS_VM_SNAPSHOT_FROZEN", "WPS_VM_SNAPSHOT_COMPLETED"]:
        return None
    fr, done = evs[0]["data"], evs[1]["data"]
    vs.note("vm-snapshot: pause %.1f ms (%s), total %.0f ms" % (
        fr["pause-ns"] / 1e6, ", ".join("%s %.1f" % (k[:-3], fr[k] / 1e6)
                                        for k in PAUSE_PARTS),
        done["total-ns"] / 1e6))
    check("FROZEN: token, domain, dir, connect, the pause and its parts",
          fr["token"] == token and fr["command"] == "vm-snapshot" and
          fr["domain"] == d and fr["dir"] == snap and
          fr["connect"] == lv.uri and fr["was-running"] is True and
          fr["disks"] == 1 and fr["devices-bytes"] > 0 and
          all(isinstance(fr[k], int) for k in PAUSE_PARTS) and
          fr["pause-ns"] >= fr["devices-ns"] + fr["disks-ns"] > 0, fr)
    check("COMPLETED: the same pause, the RAM streamed, QEMU's pid",
          done["status"] == "completed" and
          all(done[k] == fr[k] for k in ("pause-ns", "disks", "was-running")
              + PAUSE_PARTS) and done["qemu-pid"] == pid and
          done["ram-bytes"] >= vs.MEM_MIB << 20 and
          0 < done["image-data-bytes"] <= done["ram-bytes"] and
          done["populated-bytes"] > 0 and
          done["total-ns"] > done["pause-ns"], done)
    check("the directory is complete, no .partial, no second one",
          sorted(os.listdir(snap)) == ["domain.xml", "memory.wps",
                                       "vm.json"] and
          not os.path.exists(snap + ".partial") and
          not os.path.exists(snap + "-2"), os.listdir(tmp))
    q = c.cmd("query-vm", {"token": token})
    check("query-vm {token}: the COMPLETED summary", q.get("return") == done,
          q)
    q = c.cmd("query-vm")
    check("query-vm: the list holds it",
          done in q.get("return", []), q)
    check("the domain runs on", vs.state(lv, d) == "running",
          vs.state(lv, d))
    vs.clean_of_us(pid, "after vm-snapshot")
    phys, ranges, rec = vs.image_ram(snap, tmp, d)
    os.unlink(phys)
    with open(os.path.join(snap, "vm.json")) as f:
        frozen = json.load(f)["disks"][0]["frozen"]
    newest, errs = vl.disk_newest(frozen, tmp)
    check("frozen disk whole", not errs, errs)
    vs.one_instant("vm-snapshot", rec, newest)
    after = lv.wait_done(d, tmp, rec["issued"] + 2)
    check("the original goes on writing its disk sequence",
          after and after["done"] > rec["issued"] + 2, after)
    return snap, rec


def restore(lv, tmp, c, d, snap, rec, name, paused):
    what = "vm-restore %s%s" % (name, " paused" if paused else "")
    r = c.cmd("vm-restore", {"dir": snap, "name": name, "paused": paused,
                             "connect": lv.uri})
    if not check("%s: the reply is a token" % what, "return" in r, r):
        return None
    token = r["return"]["token"]
    evs = events_of(c, token, None)
    names = [e["event"] for e in evs]
    if not check("%s: WPS_VM_RESTORE_COMPLETED" % what,
                 names == ["WPS_VM_RESTORE_COMPLETED"], evs):
        return None
    e = evs[0]["data"]
    vs.note("%s: %.0f ms (domain started %.0f, RAM %.0f, device state %.0f)"
            % (what, e["total-ns"] / 1e6, e["start-ns"] / 1e6,
               e["fill-ns"] / 1e6, e["devices-ns"] / 1e6))
    check("%s: the event's fields" % what,
          e["token"] == token and e["command"] == "vm-restore" and
          e["status"] == "completed" and e["dir"] == snap and
          e["name"] == name and e["paused"] is paused and
          e["connect"] == lv.uri and e["disks"] == 1 and
          e["ram-bytes"] >= vs.MEM_MIB << 20 and
          e["qemu-pid"] == lv.qemu_pid(name) and
          e["total-ns"] >= e["start-ns"] + e["fill-ns"], e)
    check("%s: %s, the original running" % (what, "paused" if paused else
                                             "running"),
          vs.state(lv, name) == ("paused" if paused else "running") and
          vs.state(lv, d) == "running",
          "%s / %s" % (vs.state(lv, name), vs.state(lv, d)))
    first = lv.ram_seq(name, tmp)
    if paused:
        check("%s: its RAM record is the snapshot's (%s)" % (what, rec),
              first == rec, first)
    else:
        check("%s: runs on from the snapshot's instant (seq %d, no reboot)"
              % (what, rec["done"]), first and first["done"] >= rec["done"]
              and first["writes"] >= rec["writes"], "%s then %s" % (rec,
                                                                    first))
        after = lv.wait_done(name, tmp, rec["issued"] + 3)
        check("%s: goes on writing its disk sequence" % what,
              after and after["done"] > rec["issued"] + 3, after)
    return e["qemu-pid"]


def refused_later(lv, tmp, c, d, what, args, cause, errno):
    """A vm-snapshot the library refuses: a token, then only
    WPS_VM_SNAPSHOT_FAILED with its cause and errno name; the domain runs."""
    r = c.cmd("vm-snapshot", dict(args, connect=lv.uri))
    if not check("%s: a token (the library looks)" % what, "return" in r, r):
        return
    evs = events_of(c, r["return"]["token"], None)
    e = evs[-1]["data"]
    check("%s: only WPS_VM_SNAPSHOT_FAILED, %r, %s" % (what, cause, errno),
          [x["event"] for x in evs] == ["WPS_VM_SNAPSHOT_FAILED"] and
          e["status"] == "failed" and e["domain"] == args["domain"] and
          e["dir"] == args["dir"] and e["errno"] == errno and
          cause in e["cause"], evs)
    check("%s: the domain runs" % what, vs.state(lv, d) == "running",
          vs.state(lv, d))


def checkpoints(lv, tmp, c, d, pid):
    """vm-checkpoint until vm-stop: an event per durable checkpoint, then
    COMPLETED with their count; the series restores; the domain runs."""
    cdir = os.path.join(tmp, d + "-ckpt")
    r = c.cmd("vm-checkpoint", {"domain": d, "dir": cdir, "connect": lv.uri,
                                "interval-ms": 300})
    check("vm-checkpoint: the reply is a token",
          isinstance(r.get("return", {}).get("token"), int), r)
    if "return" not in r:
        return
    token = r["return"]["token"]
    r2 = c.cmd("vm-snapshot", {"domain": d, "dir": cdir + "-x",
                               "connect": lv.uri})
    check("a vm-snapshot of the domain meanwhile: refused, naming the "
          "series", "already has a vm-checkpoint running" in err(r2), r2)
    seen = events_of(c, token, "WPS_VM_CHECKPOINT")
    while len(seen) < 3 and seen[-1]["event"] == "WPS_VM_CHECKPOINT":
        seen += events_of(c, token, "WPS_VM_CHECKPOINT")
    r = c.cmd("vm-stop", {"token": token})
    check("vm-stop: accepted", "return" in r, r)
    evs = seen + events_of(c, token, None)
    ck = [e["data"] for e in evs if e["event"] == "WPS_VM_CHECKPOINT"]
    end = evs[-1]
    check("an event per checkpoint, seq 0, 1, 2, ..., with its pause",
          len(ck) >= 3 and [x["seq"] for x in ck] == list(range(len(ck)))
          and all(x["pause-ns"] > 0 and x["disks"] == 1 and
                  os.path.exists(x["image"]) and os.path.exists(x["meta"])
                  for x in ck), ck)
    check("then WPS_VM_CHECKPOINT_COMPLETED with their count",
          end["event"] == "WPS_VM_CHECKPOINT_COMPLETED" and
          end["data"]["checkpoints"] == len(ck), end)
    check("the domain runs on", vs.state(lv, d) == "running",
          vs.state(lv, d))
    vs.clean_of_us(pid, "after vm-stop")
    r = c.cmd("vm-stop", {"token": token})
    check("vm-stop of a series that ended: an error naming the token",
          "no running vm-checkpoint has token %d" % token in err(r), r)
    n = ck[-1]["seq"] if ck else 0
    r = vs.wpsnap(lv, "restore", cdir, "--name", d + "-ck", "--paused")
    check("the newest checkpoint (%d) restores" % n, r.returncode == 0,
          r.stderr.strip())
    lv.virsh("destroy", d + "-ck", check=False)


def bad_input(lv, tmp, c, d, snap):
    out = os.path.join(tmp, "bad")
    refused_later(lv, tmp, c, d, "unknown domain", {"domain": "nosuch",
                                                     "dir": out},
                  "domain nosuch not found", "ENOENT")
    check("unknown domain: nothing written", not os.path.exists(out) and
          not os.path.exists(out + ".partial"), os.listdir(tmp))
    if snap:
        before = sorted(os.listdir(snap))
        refused_later(lv, tmp, c, d, "existing directory", {"domain": d,
                                                             "dir": snap},
                      snap + " exists already", "EEXIST")
        check("existing directory: left as it was",
              sorted(os.listdir(snap)) == before, os.listdir(snap))
    for what, cmd, args, want in (
            ("relative dir", "vm-snapshot", {"domain": d, "dir": "x"},
             "dir must be an absolute path"),
            ("no domain", "vm-snapshot", {"dir": out},
             "missing key 'domain'"),
            ("unknown key", "vm-restore", {"dir": out, "force": True},
             "force"),
            ("paused not a bool", "vm-restore", {"dir": out, "paused": 1},
             "paused"),
            ("empty name", "vm-restore", {"dir": out, "name": ""},
             "name must not be empty"),
            ("unknown token", "query-vm", {"token": 999999},
             "no VM job has token 999999")):
        r = c.cmd(cmd, args)
        check("%s %s: GenericError %r" % (cmd, what, want),
              err_class(r) == "GenericError" and want in err(r), r)


def nonroot(lv, S, dd, d):
    if not shutil.which("setpriv"):
        wpstest.skip("a client that is not root", "setpriv not installed")
        return
    ronly = os.path.join(dd, "rootonly")
    os.mkdir(ronly, 0o700)
    deny = "permission denied: %s is for root only"
    tries = [
        ("vm-snapshot into a root-only directory", "vm-snapshot",
         {"domain": d, "dir": ronly + "/x", "connect": lv.uri},
         deny % "vm-snapshot"),
        ("vm-restore", "vm-restore", {"dir": ronly + "/x", "name": "stolen",
                                      "connect": lv.uri},
         deny % "vm-restore"),
        ("query-vm", "query-vm", None, None),
    ]
    got = wpstest.nonroot_requests(S, tries)
    check("non-root client: its uid named in the refusals",
          all("uid 65534" in err(got.get(t[0], {})) for t in tries[:2]), got)
    check("non-root client: nothing in the root-only directory, no domain "
          "'stolen', the domain running",
          os.listdir(ronly) == [] and "stolen" not in
          lv.virsh("list", "--all", "--name").stdout and
          vs.state(lv, d) == "running", os.listdir(ronly))


def killed_during(lv, tmp, dd, d, pid):
    """wpsnapd SIGKILLed while the domain is suspended for a vm-snapshot
    (the library's own test hook, at "stopped"): the QEMU module's
    watchdog, forked from the daemon, resumes the domain; nothing is
    traced or protected, nothing published under the final name."""
    S = os.path.join(dd, "kill.sock")
    p = wpstest.start_daemon(S, env={"WPSNAP_QEMU_TEST_KILL": "stopped"})
    c = Conn(S)
    snap = os.path.join(tmp, d + "-killed")
    r = c.cmd("vm-snapshot", {"domain": d, "dir": snap, "connect": lv.uri})
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        pass
    check("wpsnapd killed while the domain is paused for vm-snapshot",
          "return" in r and p.returncode == -9, (r, p.returncode))
    c.close()
    check("killed: the domain runs again (the watchdog's virsh resume)",
          wpstest.wait_for(lambda: vs.state(lv, d) == "running", 30),
          vs.state(lv, d))
    vs.clean_of_us(pid, "killed")
    check("killed: nothing published under the final name",
          not os.path.exists(snap), os.listdir(tmp))
    shutil.rmtree(snap + ".partial", ignore_errors=True)


def quit_during(lv, tmp, c, p, d, pid):
    """quit while a vm-snapshot runs: the library's call cannot be
    interrupted, so the daemon waits for it and exits cleanly; the domain
    runs on, unprotected, and the directory is complete."""
    snap = os.path.join(tmp, d + "-quit")
    c.send("vm-snapshot", {"domain": d, "dir": snap, "connect": lv.uri})
    c.send("quit")
    r1, r2 = c.reply(), c.reply()
    p.wait(120)
    check("quit during a vm-snapshot: both answered, wpsnapd exits 0",
          "token" in r1.get("return", {}) and r2.get("return") == {} and
          p.returncode == 0, (r1, r2, p.returncode))
    check("quit during a vm-snapshot: the domain runs, the directory is "
          "complete", vs.state(lv, d) == "running" and
          sorted(os.listdir(snap)) == ["domain.xml", "memory.wps",
                                       "vm.json"], os.listdir(tmp))
    vs.clean_of_us(pid, "after quit during a vm-snapshot")


def main(lv, tmp):
    pids = []
    dd = daemon_dir()
    try:
        S = os.path.join(dd, "wpsnapd.sock")
        p = wpstest.start_daemon(S, "--group", "nogroup")
        c = Conn(S)
        names = [x["name"] for x in c.cmd("query-commands")["return"]]
        check("query-commands lists vm-snapshot, vm-restore, query-vm",
              all(n in names for n in ("vm-snapshot", "vm-restore",
                                       "query-vm")), names)
        d = "wpsnap-dvm"
        vs.boot(lv, tmp, "shared", d)
        pid = lv.qemu_pid(d)
        pids.append(pid)
        got = snapshot(lv, tmp, c, d, pid)
        snap = got[0] if got else None
        if got:
            snap, rec = got
            for name, paused in ((d + "-paused", True), (d + "-copy", False)):
                qp = restore(lv, tmp, c, d, snap, rec, name, paused)
                if qp:
                    pids.append(qp)
                lv.virsh("destroy", name, check=False)
        checkpoints(lv, tmp, c, d, pid)
        bad_input(lv, tmp, c, d, snap)
        nonroot(lv, S, dd, d)
        killed_during(lv, tmp, dd, d, pid)
        quit_during(lv, tmp, c, p, d, pid)
        bad = wpstest.sanitizer_reports(dd)
        check("no sanitizer report from wpsnapd", not bad, bad)
        if wpstest.failed:
            with open(S + ".log") as f:
                print("# wpsnapd.log:\n#   " + f.read()[-3000:].replace(
                    "\n", "\n#   "), flush=True)
    except SystemExit as e:
        wpstest.ko("main", "terminated (exit %s): cleaning up" % e.code)
        raise
    finally:
        shutil.rmtree(dd, ignore_errors=True)
        lv.finish(pids)


def without_libvirt():
    """A build without libvirt: wpsnapd refuses both commands with a clear
    reply and serves on; then exit 77 (nothing VM could be tested)."""
    dd = daemon_dir()
    try:
        S = os.path.join(dd, "wpsnapd.sock")
        p = wpstest.start_daemon(S)
        c = Conn(S)
        for cmd, args in (("vm-snapshot", {"domain": "x", "dir": "/x"}),
                          ("vm-restore", {"dir": "/x"})):
            r = c.cmd(cmd, args)
            check("built without libvirt: %s refused, saying so" % cmd,
                  err_class(r) == "GenericError" and
                  "built without libvirt" in err(r), r)
        r = c.cmd("quit")
        p.wait(30)
        check("wpsnapd served on and quit cleanly", p.returncode == 0,
              p.returncode)
    finally:
        wpstest.finish(dd)
        shutil.rmtree(dd, ignore_errors=True)
    print("# SKIP: wpsnap was built without libvirt", flush=True)
    sys.exit(1 if wpstest.failed else 77)


def top():
    # libvirt's in-process test driver: no daemon needed to ask
    r = subprocess.run([wpstest.WPSNAP, "vm", "snapshot", "x", "-o",
                        "/nonexistent/x", "--connect", "test:///default"],
                       stderr=subprocess.PIPE, text=True)
    if "built without libvirt" in r.stderr:
        without_libvirt()
    vl.run_test(main, "wpsnap-dvm.")


if __name__ == "__main__":
    top()
