#!/usr/bin/env python3
# wpsnapd snapshots of processes that know nothing about wpsnap
# (wps-guest-attach): the image is the memory of one instant
# (tests/integration/attach_target.c explains why its check proves it),
# chosen ranges and the default selection, every refusal a clear error
# with the process untouched, a process that exits, a cancel, and
# SIGKILL of wpsnapd in the middle. Every target must keep its fds, run
# on, write every page again and verify its own memory at the end.
# Prints "N passed, N failed"; exit status 1 on any failure.
import os, signal, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wpstest
from wpstest import B, Conn, check, err, ko, ok, procs, start_daemon, wait_for

TGT = os.path.join(B, "tests", "integration", "attach_target")
T = tempfile.mkdtemp(prefix="wpsnapd-attach.", dir="/var/tmp")


class Target:
    """An attach_target process: its regions, sweep counter and fds."""

    def __init__(self, name, *args):
        self.name = name
        self.out = os.path.join(T, name + ".out")
        self.p = subprocess.Popen([TGT] + list(args), stdout=open(self.out, "w"),
                                  stderr=open(os.path.join(T, name + ".err.log"), "w"))
        procs.append(self.p)
        if not wait_for(lambda: "ready" in self.text(), 15):
            raise RuntimeError("target %s did not start" % name)
        self.pid = self.p.pid
        self.ranges = {}
        for line in self.text().splitlines():
            w = line.split()
            if w and w[0] in ("memfd", "anon"):
                a, b = w[1].split("-")
                self.ranges[w[0]] = (int(a, 16), int(b, 16))
        self.fds = self.fd_table()

    def text(self):
        return open(self.out).read()

    def fd_table(self):
        d = "/proc/%d/fd" % self.pid
        return sorted((f, os.readlink(os.path.join(d, f))) for f in os.listdir(d))

    def sweep(self):
        n = self.text().count("sweep ")
        self.p.send_signal(signal.SIGUSR2)
        wait_for(lambda: self.text().count("sweep ") > n, 5)
        return int([l for l in self.text().splitlines() if l.startswith("sweep")][-1].split()[1])

    def check_image(self, img, kinds, lo=None, hi=None):
        cmd = [TGT, "--check", img]
        for k in kinds:
            cmd += ["--addr", "%x" % self.ranges[k][0]]
        if lo is not None:
            cmd += ["--min", str(lo), "--max", str(hi)]
        r = wpstest.run(cmd)
        return r.returncode == 0, r.stdout.strip()

    def finish(self):
        """fds unchanged; then it rewrites every page and checks itself."""
        check("%s: fds unchanged" % self.name, self.fd_table() == self.fds,
              (self.fds, self.fd_table()))
        self.p.send_signal(signal.SIGUSR1)
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            ko("%s: hung after the snapshots (protection leaked?)" % self.name)
            return
        check("%s: ran on, verified its memory, exited 0" % self.name,
              self.p.returncode == 0 and "verified" in self.text(),
              (self.p.returncode, open(os.path.join(T, self.name + ".err.log")).read()))


def rng(t, kind):
    a, b = t.ranges[kind]
    return {"start": a, "end": b}


def snapshot(c, guest, path, **args):
    """Start; the reply comes once frozen (or with the error); then the end."""
    a = {"guest": guest, "path": path}
    a.update(args)
    r = c.cmd("wps-snapshot-start", a, timeout=60)
    if "error" in r:
        return r, None
    # by token: a refused start also ends with an event of the same guest
    tok = r["return"]["token"]
    return r, c.event("WPS_SNAPSHOT_*", lambda d: d.get("token") == tok, 60)


def refusals(c, t):
    def refused(name, execute, args, word):
        r = c.cmd(execute, args)
        check(name, "error" in r and word in err(r), r)

    nopid = next(p for p in range(4194303, 1, -1) if not os.path.exists("/proc/%d" % p))
    refused("attach: no such process", "wps-guest-attach",
            {"guest": "x", "pid": nopid}, "no process")
    refused("attach: unknown key", "wps-guest-attach",
            {"guest": "x", "pid": t.pid, "uffd": "u"}, "uffd")
    refused("attach: range not page aligned", "wps-guest-attach",
            {"guest": "x", "pid": t.pid, "ranges": [{"start": 1, "end": 4097}]},
            "page size")
    refused("attach: range start >= end", "wps-guest-attach",
            {"guest": "x", "pid": t.pid, "ranges": [{"start": 8192, "end": 4096}]},
            "start < end")
    refused("attach: range without end", "wps-guest-attach",
            {"guest": "x", "pid": t.pid, "ranges": [{"start": 4096}]}, "end")
    refused("attach: itself", "wps-guest-attach",
            {"guest": "x", "pid": DAEMON.pid}, "itself")
    r = c.cmd("wps-guest-attach", {"guest": "t", "pid": t.pid, "ranges": [rng(t, "memfd")]})
    check("attach: registered", r.get("return") == {}, r)
    refused("attach: name taken", "wps-guest-attach",
            {"guest": "t", "pid": t.pid}, "already registered")
    g = [g for g in c.cmd("query-guests")["return"] if g["guest"] == "t"]
    check("query-guests: kind attach, its ranges", g and g[0]["kind"] == "attach"
          and g[0]["ranges"] == [rng(t, "memfd")] and g[0]["pid"] == t.pid, g)
    refused("set-uffd on an attached process", "wps-guest-set-uffd",
            {"guest": "t", "uffd": "u"}, "attached process")
    refused("vcpus-paused on an attached process", "wps-snapshot-start",
            {"guest": "t", "path": T + "/x.img", "vcpus-paused": True}, "attached process")
    refused("transaction on an attached process", "transaction",
            {"guest": "t", "actions": [{"type": "memory-snapshot",
                                        "path": T + "/x.img"}]},
            "attached process")
    check("refusals: nothing was written", not os.listdir(T + "/img"))


def snapshots(c, t):
    s0 = t.sweep()
    r, e = snapshot(c, "t", T + "/img/a.img")
    s1 = t.sweep()
    if check("memfd range: snapshot completed", e and e["event"] == "WPS_SNAPSHOT_COMPLETED"
             and "token" in r.get("return", {}), (r, e)):
        good, why = t.check_image(T + "/img/a.img", ["memfd"], s0, s1)
        check("memfd range: the image is the memory of one instant inside the "
              "snapshot (%s)" % why, good, why)
        check("memfd range: summary has the pause", e["data"].get("pause-ns", 0) > 0, e)
    # The same process again: nothing was left behind by the first.
    r, e = snapshot(c, "t", T + "/img/a.img")
    check("existing image refused without overwrite", "error" in r and
          "exists" in err(r), r)
    r, e = snapshot(c, "t", T + "/img/a.img", overwrite=True)
    good, why = t.check_image(T + "/img/a.img", ["memfd"]) if e else (False, r)
    check("second snapshot of the same process, overwrite: consistent", good, why)

    # Default selection: its anonymous memory and its memfd, one instant.
    r = c.cmd("wps-guest-attach", {"guest": "t-all", "pid": t.pid})
    check("attach, default selection", r.get("return") == {}, r)
    s0 = t.sweep()
    r, e = snapshot(c, "t-all", T + "/img/all.img")
    s1 = t.sweep()
    if check("default selection: completed", e and e["event"] == "WPS_SNAPSHOT_COMPLETED",
             (r, e)):
        good, why = t.check_image(T + "/img/all.img", ["memfd", "anon"], s0, s1)
        check("default selection: one instant across anon and memfd (%s)" % why, good, why)

    # A range with nothing mapped: refused at the snapshot, target untouched.
    r = c.cmd("wps-guest-attach", {"guest": "t-hole", "pid": t.pid,
                                   "ranges": [{"start": 4096, "end": 8192}]})
    r, e = snapshot(c, "t-hole", T + "/img/hole.img")
    check("unmapped range: clear error at start", "error" in r and
          "nothing is mapped" in err(r), r)
    check("unmapped range: nothing published", not os.path.exists(T + "/img/hole.img")
          and not os.path.exists(T + "/img/hole.img.partial"))
    q = c.cmd("query-snapshot", {"guest": "t-hole"})["return"]
    check("unmapped range: query-snapshot says failed", q.get("status") == "failed", q)
    r = c.cmd("wps-guest-unregister", {"guest": "t-hole"})
    check("unregister an attached process", r.get("return") == {}, r)

    # Cancel as soon as it is frozen: cancelled, or done before the cancel.
    r = c.cmd("wps-snapshot-start", {"guest": "t-all", "path": T + "/img/c.img"}, timeout=60)
    c.cmd("wps-snapshot-cancel", {"guest": "t-all"})
    tok = r.get("return", {}).get("token")
    e = c.event("WPS_SNAPSHOT_*", lambda d: d.get("token") == tok, 60)
    if e["event"] == "WPS_SNAPSHOT_CANCELLED":
        check("cancel: no image, no partial", not os.path.exists(T + "/img/c.img")
              and not os.path.exists(T + "/img/c.img.partial"))
    else:
        check("cancel too late: the snapshot completed", e["event"] ==
              "WPS_SNAPSHOT_COMPLETED", e)


def exited(c):
    t = Target("gone", "--memfd", "8", "--anon", "8")
    r = c.cmd("wps-guest-attach", {"guest": "gone", "pid": t.pid})
    t.p.kill()
    t.p.wait()
    r, e = snapshot(c, "gone", T + "/img/gone.img")
    check("process gone before the snapshot: clear error", "error" in r and
          ("exited" in err(r) or "no process %d" % t.pid in err(r)), r)
    check("process gone: nothing published", not os.path.exists(T + "/img/gone.img"))
    c.cmd("wps-guest-unregister", {"guest": "gone"})


def killed(S):
    """SIGKILL wpsnapd at points of an attached snapshot: as it is frozen and
    during the copy. (Not inside the attach's injected syscall, a window of
    microseconds in which no tracer can die harmlessly: docs/PROTOCOL.md.)"""
    t = Target("killed", "--memfd", "128", "--anon", "32")
    for i, delay in enumerate((0.0, 0.002, 0.01, 0.05)):
        d = start_daemon(S)
        c = Conn(S)
        c.cmd("wps-guest-attach", {"guest": "k", "pid": t.pid})
        r = c.cmd("wps-snapshot-start", {"guest": "k", "path": T + "/img/k%d.img" % i},
                  timeout=60)
        time.sleep(delay)
        d.kill()
        d.wait()
        c.close()
        os.unlink(S)   # so that the next start waits for its own socket
        # The tracer let go at the freeze; the uffd died with wpsnapd, and
        # its registrations and protection with it.
        st = open("/proc/%d/status" % t.pid).read()
        tracer = [l for l in st.splitlines() if l.startswith("TracerPid")]
        check("kill %d: frozen, then killed: target running, not traced" % i,
              "return" in r and t.p.poll() is None and tracer == ["TracerPid:\t0"],
              (r, t.p.poll(), tracer))
        check("kill %d: no partial image published" % i,
              not os.path.exists(T + "/img/k%d.img" % i) or
              t.check_image(T + "/img/k%d.img" % i, ["memfd", "anon"])[0])
        n = t.sweep()
        check("kill %d: target keeps writing" % i, wait_for(lambda: t.sweep() > n, 20))
    t.finish()


def main():
    global DAEMON
    os.mkdir(T + "/img")
    S = T + "/wpsnapd.sock"
    DAEMON = start_daemon(S, "-v")
    c = Conn(S)
    t = Target("main", "--memfd", "128", "--anon", "32")
    for f in (refusals, snapshots):
        try:
            f(c, t)
        except Exception as e:
            ko(f.__name__, repr(e))
    try:
        exited(c)
    except Exception as e:
        ko("exited", repr(e))
    t.finish()
    r = c.cmd("quit")
    check("quit", "return" in r, r)
    DAEMON.wait(timeout=10)
    try:
        killed(T + "/k.sock")
    except Exception as e:
        ko("killed", repr(e))
    bad = wpstest.sanitizer_reports(T)
    check("no sanitizer report", not bad, bad)


DAEMON = None
wpstest.run_main(main, T)
