#!/usr/bin/env python3
# wpsnapd periodic checkpoints of a VMM's guest (wps-checkpoint-start /
# -stop / query-checkpoint): wpsnap-guest --daemon registers its memfd RAM
# and answers one pause request per checkpoint, writing the ledger of each
# pause; every checkpoint, restored through its chain, must equal the
# ledger of its instant block for block. Also: events, retention (keep),
# stop mid-series, refusals with the guest untouched, a fresh uffd asked
# for afterwards, and the guest verifying its own memory at the end (no
# protection left). Prints "N passed, N failed".
import os, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wpstest
from wpstest import (WPSNAP, Conn, check, err, err_class, ko, start_daemon, stop_guest,
                     uffd_ready, vmm_guest, wait_for)

T = tempfile.mkdtemp(prefix="wpsnapd-ckpt.", dir="/var/tmp")


def guest(sock, name, *extra):
    """A guest that serves until the test is done with it (stop_guest):
    how long the series takes depends on the machine's load, so no fixed
    duration may end it under the test's feet."""
    return vmm_guest(sock, name, "--threads", "2", "--pattern", "hot", "--verify-self",
                     *extra, size="64M")


def chain_ok(img, ledger):
    r = wpstest.run([WPSNAP, "chain", img, "--ledger", ledger])
    return r.returncode == 0 and "every block matches" in r.stdout, r.stdout


def series(c, S):
    d = os.path.join(T, "series")
    os.mkdir(d)
    g = guest(S, "g", "--ledger", os.path.join(T, "g-%u.ledger"), "--device-state")
    if not check("guest registered", uffd_ready(c, "g")):
        return g
    r = c.cmd("wps-checkpoint-start", {"guest": "g", "dir": d, "interval-ms": 150,
                                        "count": 5})
    check("wps-checkpoint-start", "token" in r.get("return", {}), r)
    evs = [c.event("WPS_CHECKPOINT", lambda x: x["guest"] == "g", 60) for _ in range(5)]
    stopped = c.event("WPS_CHECKPOINT_STOPPED", lambda x: x["guest"] == "g", 60)
    check("5 WPS_CHECKPOINT events, in order, with their figures",
          [e["data"]["seq"] for e in evs] == list(range(5)) and
          all(e["data"]["pause-ns"] > 0 and "dirty-bytes" in e["data"] for e in evs), evs)
    check("WPS_CHECKPOINT_STOPPED after the count", stopped["data"]["status"] == "stopped"
          and stopped["data"]["checkpoints"] == 5, stopped)
    # the guest's ledger of pause k+1 is checkpoint k's instant
    wait_for(lambda: os.path.exists(os.path.join(T, "g-5.ledger")), 60)
    for k in range(5):
        img = os.path.join(d, "g-%06d.wpsnap" % k)
        good, out = chain_ok(img, os.path.join(T, "g-%d.ledger" % (k + 1)))
        check("checkpoint %d through its chain equals the guest's ledger" % k, good, out)
        r = wpstest.run([WPSNAP, "export", img, "--blob", "device-state", "-o",
                         os.path.join(T, "ds")])
        ds = open(os.path.join(T, "ds")).read() if r.returncode == 0 else r.stdout
        check("checkpoint %d holds the device state of its own pause" % k,
              ds == "wpsnap-guest g pause %d\n" % (k + 1), ds)
    q = c.cmd("query-checkpoint", {"guest": "g"})["return"]
    check("query-checkpoint after the series", q.get("status") == "stopped" and
          q.get("checkpoints") == 5 and q.get("last", {}).get("seq") == 4, q)
    check("a fresh uffd is asked for and handed over", uffd_ready(c, "g"))
    return g


def stop_and_keep(c, S):
    d = os.path.join(T, "keep")
    os.mkdir(d)
    r = c.cmd("wps-checkpoint-start", {"guest": "g", "dir": d, "interval-ms": 50,
                                        "keep": 2})
    check("start without count, keep 2", "return" in r, r)
    for _ in range(4):
        c.event("WPS_CHECKPOINT", lambda x: x["guest"] == "g", 60)
    q = c.cmd("query-checkpoint", {"guest": "g"})["return"]
    check("query-checkpoint while running", q.get("status") in ("checkpointing", "pausing")
          and q.get("checkpoints", 0) >= 4, q)
    r = c.cmd("wps-snapshot-start", {"guest": "g", "path": T + "/x.wpsnap"})
    check("no snapshot while checkpointing", "error" in r and "checkpoint" in err(r), r)
    r = c.cmd("wps-checkpoint-stop", {"guest": "g"})
    check("wps-checkpoint-stop", r.get("return") == {}, r)
    e = c.event("WPS_CHECKPOINT_STOPPED", lambda x: x["guest"] == "g", 60)
    check("stopped on request", e["data"]["status"] == "stopped", e)
    files = sorted(f for f in os.listdir(d) if f.endswith(".wpsnap"))
    check("retention kept 2 images (%s)" % files, len(files) == 2, files)
    check("no partial image left", not [f for f in os.listdir(d) if f.endswith(".partial")])
    r = wpstest.run([WPSNAP, "chain", os.path.join(d, files[-1])]) if files else None
    check("the newest kept image opens as a chain of 2", r is not None and r.returncode == 0
          and r.stdout.count("\n") == 2, r and r.stdout)


def refusals(c, S):
    def refused(name, args, word):
        r = c.cmd("wps-checkpoint-start", args)
        check(name, "error" in r and word in err(r), r)
    uffd_ready(c, "g")
    refused("relative dir", {"guest": "g", "dir": "rel"}, "absolute")
    refused("missing dir", {"guest": "g", "dir": T + "/nope"}, "existing directory")
    refused("keep 0", {"guest": "g", "dir": T, "keep": 0}, "keep")
    refused("unknown key", {"guest": "g", "dir": T, "period": 3}, "period")
    refused("no such guest", {"guest": "zz", "dir": T}, "no guest")
    r = c.cmd("wps-checkpoint-stop", {"guest": "g"})
    check("stop without a series", "error" in r and "no checkpoints" in err(r), r)


def main():
    S = os.path.join(T, "wpsnapd.sock")
    start_daemon(S, "-v")
    c = Conn(S)
    g = None
    try:
        g = series(c, S)
        refusals(c, S)
        stop_and_keep(c, S)
    except Exception as e:
        ko("checkpoint tests", repr(e))
    if g:
        try:
            rc, out = stop_guest(g)   # done with it: verify and exit
            check("the guest ran on, writable and intact (--verify-self)",
                  rc == 0 and "verify-self" in out, out[-800:])
        except subprocess.TimeoutExpired:
            ko("the guest hung (protection leaked or vCPUs left paused)")
        # Its connection closed, so the daemon unregisters it (when it
        # notices: wait for that, do not assume it).
        gone = wait_for(lambda: not [x for x in c.cmd("query-guests")["return"]
                                     if x["guest"] == "g"], 30)
        r = c.cmd("query-checkpoint", {"guest": "g"})
        check("query-checkpoint of a guest that has gone: DeviceNotFound",
              gone and err_class(r) == "DeviceNotFound" and "no guest named 'g'" in err(r), r)
    c.cmd("quit")
    bad = wpstest.sanitizer_reports(T)
    check("no sanitizer report", not bad, bad)


wpstest.run_main(main, T)
