#!/usr/bin/env python3
# QEMU running the test guest (tools/qguest), for tests/integration/qemu.py
# and tests/bench/qemu.sh: starts qemu-system-x86_64 (TCG) with two QMP
# sockets (one for the test, one for wpsnap, since QEMU serves one client
# per socket) and the guest's debugcon on a socket we listen on; a reader
# thread stamps every progress line with our monotonic clock, so the
# guest's write rate and its pauses are known at any moment. Also QEMU's
# own background-snapshot, driven the same way, for the bench.
#
#   python3 qemu_lib.py bench [--mem MIB] [--size MIB] [--pattern P]
#                             [--backing anon|memfd] [--runs N] [--json]
import json, os, re, shutil, signal, socket, subprocess, sys, tempfile
import threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wpstest  # noqa: E402

B = os.environ.get("WPSNAP_BUILDDIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
WPSNAP = os.path.join(B, "tools", "wpsnap")
GUEST = os.path.join(B, "tools", "qguest", "qguest.elf")
MiB = 1 << 20


def _die_with_parent():
    """QEMU dies with whoever started it (PR_SET_PDEATHSIG), so a test
    killed outright leaves no QEMU behind."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def find_qemu():
    return shutil.which("qemu-system-x86_64")


class QMP:
    """A QMP client: commands by id, events kept (with QEMU's stamps)."""

    def __init__(self, path, timeout=30):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self.events = []
        self.n = 0
        greeting = self._recv()
        assert "QMP" in greeting, greeting
        self.cmd("qmp_capabilities")

    def _recv(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("QEMU closed the QMP connection")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_fd(self, name, fd):
        self.n += 1
        msg = json.dumps({"execute": "getfd", "arguments": {"fdname": name},
                          "id": self.n}).encode() + b"\n"
        socket.send_fds(self.s, [msg], [fd])
        return self._wait(self.n, "getfd")

    def cmd(self, cmd, **args):
        self.n += 1
        req = {"execute": cmd, "id": self.n}
        if args:
            req["arguments"] = args
        self.s.sendall(json.dumps(req).encode() + b"\n")
        return self._wait(self.n, cmd)

    def _wait(self, n, cmd):
        while True:
            r = self._recv()
            if "event" in r:
                self.events.append(r)
                continue
            if r.get("id") != n:
                continue
            if "error" in r:
                raise RuntimeError("QMP %s: %s" % (cmd, r["error"]["desc"]))
            return r["return"]

    def hmp(self, line):
        return self.cmd("human-monitor-command", **{"command-line": line})

    def poll_events(self, timeout=0.0):
        """Read whatever events arrived (waiting at most timeout)."""
        self.s.settimeout(timeout if timeout > 0 else 0.001)
        try:
            while True:
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    r = json.loads(line)
                    if "event" in r:
                        self.events.append(r)
                d = self.s.recv(65536)
                if not d:
                    break
                self.buf += d
        except (socket.timeout, BlockingIOError):
            pass
        finally:
            self.s.settimeout(30)

    def close(self):
        self.s.close()


def event_time(e):
    return e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6


class Guest:
    """qemu-system-x86_64 running qguest. backing: anon (plain -m: private
    anonymous RAM, THP through QEMU's madvise) or memfd (share=on)."""

    def __init__(self, tmp, mem_mib=256, backing="anon", append="",
                 name="vm"):
        self.tmp = tmp
        self.mem = mem_mib * MiB
        self.qmp_test = os.path.join(tmp, name + ".qmp")
        self.qmp_wpsnap = os.path.join(tmp, name + ".qmp2")
        dbg = os.path.join(tmp, name + ".dbg")
        for p in (self.qmp_test, self.qmp_wpsnap, dbg):
            if os.path.exists(p):
                os.unlink(p)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(dbg)
        self.listener.listen(1)
        args = [find_qemu(), "-machine", "pc", "-accel", "tcg",
                "-m", "%dM" % mem_mib, "-smp", "1", "-display", "none",
                "-nodefaults", "-no-user-config", "-S",
                "-qmp", "unix:%s,server=on,wait=off" % self.qmp_test,
                "-qmp", "unix:%s,server=on,wait=off" % self.qmp_wpsnap,
                "-chardev", "socket,id=dbg,path=%s" % dbg,
                "-device", "isa-debugcon,chardev=dbg,iobase=0xe9",
                "-kernel", GUEST, "-append", append]
        if backing == "memfd":
            args += ["-object", "memory-backend-memfd,id=ram0,size=%dM,"
                     "share=on" % mem_mib, "-machine", "memory-backend=ram0"]
        elif backing != "anon":
            raise ValueError("backing: anon or memfd")
        self.log = open(os.path.join(tmp, name + ".log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        self.pid = self.proc.pid
        self.samples = []       # (monotonic time, page writes)
        self.lines = []
        self.lock = threading.Lock()
        self.con = self.qmp = None
        try:
            self.listener.settimeout(30)
            self.con, _ = self.listener.accept()
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
            deadline = time.time() + 30
            while True:
                try:
                    self.qmp = QMP(self.qmp_test)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.time() > deadline or self.proc.poll() is not None:
                        raise
                    time.sleep(0.05)
            self.qmp.cmd("cont")
        except Exception as e:
            self.kill()
            self.log.close()
            with open(os.path.join(tmp, name + ".log")) as f:
                raise RuntimeError("QEMU did not start (%s): %s" %
                                   (e, f.read().strip()))

    def _read(self):
        buf = b""
        while True:
            try:
                d = self.con.recv(65536)
            except OSError:
                return
            if not d:
                return
            t = time.monotonic()
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.decode(errors="replace")
                with self.lock:
                    if line.startswith("P "):
                        self.samples.append((t, int(line[2:], 16)))
                    else:
                        self.lines.append(line)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if "ready" in self.lines:
                    return True
                bad = [l for l in self.lines if l.startswith("qguest:")]
            if bad or self.proc.poll() is not None:
                raise RuntimeError("guest failed: %s" % (bad or "QEMU exited"))
            time.sleep(0.05)
        raise RuntimeError("guest not ready in %d s" % timeout)

    def count(self):
        with self.lock:
            return self.samples[-1][1] if self.samples else 0

    def progressing(self, timeout=5.0):
        """Whether the guest reports new page writes within timeout."""
        c0 = self.count()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() > c0:
                return True
            time.sleep(0.01)
        return False

    def window(self, t0, t1):
        with self.lock:
            return [s for s in self.samples if t0 <= s[0] <= t1]

    def rate(self, t0, t1):
        """Page writes per second between t0 and t1 (by the samples just
        outside the window, so a pause at either end counts)."""
        with self.lock:
            before = [s for s in self.samples if s[0] <= t0]
            after = [s for s in self.samples if s[0] >= t1]
        if not before or not after:
            return None
        a, b = before[-1], after[0]
        return (b[1] - a[1]) / (b[0] - a[0])

    def max_gap(self, t0, t1):
        """The longest time without a progress line inside [t0, t1],
        counting the lines just outside it."""
        with self.lock:
            s = [x[0] for x in self.samples]
        pts = [x for x in s if t0 <= x <= t1]
        prev = [x for x in s if x < t0][-1:]
        nxt = [x for x in s if x > t1][:1]
        pts = prev + pts + nxt
        return max((b - a for a, b in zip(pts, pts[1:])), default=None)

    def typical_gap(self, t0, t1):
        s = sorted(b - a for a, b in zip(
            [x[0] for x in self.window(t0, t1)],
            [x[0] for x in self.window(t0, t1)][1:]))
        return s[len(s) // 2] if s else None

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def tracer(self):
        return wpstest.tracer(self.pid)

    def uffd_vmas(self):
        """Mappings still registered with a userfaultfd (VmFlags um/uw)."""
        return wpstest.uffd_vmas(self.pid)

    def ram_rss(self):
        """Resident bytes of the guest RAM mapping (QEMU's dontfork
        mapping of exactly the RAM's size)."""
        cur = None
        with open("/proc/%d/smaps" % self.pid) as f:
            for line in f:
                m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
                if m:
                    cur = {"size": int(m.group(2), 16) - int(m.group(1), 16)}
                elif cur is not None and line.startswith("Rss:"):
                    cur["rss"] = int(line.split()[1]) * 1024
                elif cur is not None and line.startswith("VmFlags:"):
                    if cur["size"] == self.mem and " dc" in line:
                        return cur["rss"]
        return None

    def ram_thp(self):
        """Bytes of the guest RAM mapping in transparent huge pages."""
        cur = None
        with open("/proc/%d/smaps" % self.pid) as f:
            for line in f:
                m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
                if m:
                    cur = {"size": int(m.group(2), 16) - int(m.group(1), 16)}
                elif cur is not None and line.startswith("AnonHugePages:"):
                    cur["thp"] = int(line.split()[1]) * 1024
                elif cur is not None and line.startswith("VmFlags:"):
                    if cur["size"] == self.mem and " dc" in line:
                        return cur.get("thp", 0)
        return None

    def pmemsave(self, path, size=None):
        self.qmp.cmd("pmemsave", val=0, size=size or self.mem,
                     filename=path)

    def close(self):
        try:
            self.qmp.cmd("quit")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for s in (self.con, self.listener):
            try:
                if s:
                    s.close()
            except OSError:
                pass
        self.log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def compare_pages(ref, img, ranges):
    """Pages of the RAM ranges [(start, end)] that differ between two raw
    guest-physical files: (pages compared, [differing page addresses])."""
    bad, pages = [], 0
    with open(ref, "rb") as a, open(img, "rb") as b:
        for start, end in ranges:
            a.seek(start)
            b.seek(start)
            pos = start
            while pos < end:
                n = min(end - pos, 1 << 20)
                x, y = a.read(n), b.read(n)
                if len(x) != n or len(y) != n:
                    bad.append(pos)
                    break
                if x != y:
                    for k in range(0, n, 4096):
                        if x[k:k + 4096] != y[k:k + 4096]:
                            bad.append(pos + k)
                pages += n // 4096
                pos += n
    return pages, bad


def physmem(image, out):
    """wpsnap snapshot --physmem: the RAM ranges it wrote."""
    r = subprocess.run([WPSNAP, "snapshot", "--physmem", image, "-o", out],
                       capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise RuntimeError("physmem: " + r.stderr.strip())
    ranges = []
    for line in r.stdout.splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            ranges.append((int(m.group(1), 16), int(m.group(2), 16) + 1))
    return ranges


# ---------------------------------------------------------------------
# The bench: QEMU's background-snapshot against wpsnap, same guest
# ---------------------------------------------------------------------

def qemu_bgsnap(g, path):
    """QEMU's migrate with background-snapshot to a file (fd: migration,
    no bandwidth cap). Returns the measurements."""
    q = g.qmp
    q.cmd("migrate-set-capabilities", capabilities=[
        {"capability": "background-snapshot", "state": True},
        {"capability": "events", "state": True}])
    q.cmd("migrate-set-parameters", **{"max-bandwidth": 100 << 30})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        q.send_fd("snapfd", fd)
    finally:
        os.close(fd)
    q.poll_events(0.05)
    q.events.clear()
    t0 = time.monotonic()
    q.cmd("migrate", uri="fd:snapfd")
    while True:
        q.poll_events(0.002)
        st = [e for e in q.events if e["event"] == "MIGRATION"]
        if st and st[-1]["data"]["status"] in ("completed", "failed",
                                               "cancelled"):
            break
    t1 = time.monotonic()
    info = q.cmd("query-migrate")
    if info.get("status") != "completed":
        raise RuntimeError("QEMU background snapshot: %s" % info)
    stop = [e for e in q.events if e["event"] == "STOP"]
    resume = [e for e in q.events if e["event"] == "RESUME"]
    pause = (event_time(resume[0]) - event_time(stop[0])) * 1e3 \
        if stop and resume else None
    return {"t0": t0, "t1": t1, "pause_ms": pause,
            "total_ms": (t1 - t0) * 1e3,
            "qemu_total_ms": info.get("total-time"),
            "image_bytes": os.stat(path).st_size,
            "image_alloc": os.stat(path).st_blocks * 512}


def wpsnap_snap(g, path, extra=()):
    q = g.qmp
    q.poll_events(0.05)
    q.events.clear()
    t0 = time.monotonic()
    r = subprocess.run([WPSNAP, "snapshot", "--qemu", g.qmp_wpsnap, "-o",
                        path, "--overwrite", "--json"] + list(extra),
                       capture_output=True, text=True, timeout=600)
    t1 = time.monotonic()
    if r.returncode:
        raise RuntimeError("wpsnap: " + r.stderr.strip())
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    q.poll_events(0.05)
    stop = [e for e in q.events if e["event"] == "STOP"]
    resume = [e for e in q.events if e["event"] == "RESUME"]
    # without QMP stop (--no-stop) the pause is QEMU's ptrace stop
    pause = (event_time(resume[0]) - event_time(stop[0])) * 1e3 \
        if stop and resume else rep["pause_ms"]
    return {"t0": t0, "t1": t1, "pause_ms": pause, "total_ms": (t1 - t0) * 1e3,
            "wpsnap_pause_ms": rep["pause_ms"],
            "image_bytes": os.stat(path).st_size,
            "image_alloc": os.stat(path).st_blocks * 512,
            "populated": rep["populated_bytes"]}


def median(v):
    v = sorted(x for x in v if x is not None)
    return v[len(v) // 2] if v else None


def bench(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="tests/bench/qemu.sh")
    ap.add_argument("--mem", type=int, default=1024, help="guest MiB")
    ap.add_argument("--size", type=int, default=0,
                    help="MiB the guest fills and writes (0: all)")
    ap.add_argument("--pattern", default="random")
    ap.add_argument("--backing", default="anon")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--wpsnap-args", default="",
                    help="more options for wpsnap snapshot --qemu")
    a = ap.parse_args(argv)
    extra = a.wpsnap_args.split()
    runners = {
        "qemu": qemu_bgsnap,
        "wpsnap": lambda g, p: wpsnap_snap(g, p, extra),
        "nostop": lambda g, p: wpsnap_snap(g, p, extra + ["--no-stop"]),
    }
    if not find_qemu():
        print("qemu-system-x86_64 not found (apt-get install "
              "qemu-system-x86)", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="wpsnap-qbench.", dir=a.dir)
    g = None
    res = {k: [] for k in runners}
    try:
        append = "pattern=%s" % a.pattern
        if a.size:
            append += " size=%d" % a.size
        g = Guest(tmp, a.mem, a.backing, append)
        g.wait_ready(300)
        time.sleep(1.5)
        for i in range(a.runs):
            for who in runners:
                path = os.path.join(tmp, "snap.%s" % who)
                populated = g.ram_rss()
                time.sleep(1.0)   # a clean second of rate before
                m = runners[who](g, path)
                time.sleep(0.3)
                before = g.rate(m["t0"] - 1.0, m["t0"])
                during = g.rate(m["t0"], m["t1"])
                m["rate_before"] = before
                m["rate_ratio"] = during / before if before and during \
                    else None
                # what the guest did not get done, in time at its own
                # full speed: independent of how long the window is
                m["lost_ms"] = (m["t1"] - m["t0"]) * 1e3 * (
                    1 - m["rate_ratio"]) if m["rate_ratio"] else None
                m["guest_gap_ms"] = g.max_gap(m["t0"], m["t1"]) * 1e3
                m["populated_rss"] = populated
                m["ram"] = a.mem * MiB
                res[who].append(m)
                os.unlink(path)
                print("%s run %d: pause %.2f ms, total %.0f ms, rate x%.2f, "
                      "image %.1f MiB" % (who, i + 1, m["pause_ms"] or -1,
                                           m["total_ms"], m["rate_ratio"]
                                           or -1, m["image_bytes"] / MiB),
                      file=sys.stderr)
    finally:
        if g:
            g.close()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    for who, runs in res.items():
        summary[who] = {k: median([r.get(k) for r in runs]) for k in (
            "pause_ms", "guest_gap_ms", "total_ms", "rate_ratio", "lost_ms",
            "image_bytes", "image_alloc", "populated_rss", "ram")}
    if a.json:
        print(json.dumps({"config": vars(a), "summary": summary,
                          "runs": res}, indent=1))
        return 0
    print("guest: %d MiB, backing %s, pattern %s%s, TCG, %d runs each "
          "(medians)" % (a.mem, a.backing, a.pattern,
                         ", %d MiB written" % a.size if a.size else "",
                         a.runs))
    print("| | QEMU background-snapshot | wpsnap --qemu | "
          "wpsnap --qemu --no-stop |")
    print("|---|---|---|---|")
    cols = [summary[k] for k in runners]

    def row(name, f):
        print("| %s | %s |" % (name, " | ".join(f(c) for c in cols)))

    row("guest pause (QMP STOP..RESUME; --no-stop: QEMU's ptrace stop)",
        lambda s: "%.2f ms" % s["pause_ms"])
    row("longest gap in guest progress", lambda s: "%.1f ms" %
        s["guest_gap_ms"])
    row("total time", lambda s: "%.0f ms" % s["total_ms"])
    row("guest write rate during / before", lambda s: "%.2f" %
        s["rate_ratio"])
    row("guest progress lost (ms at its full speed)", lambda s: "%.0f ms" %
        s["lost_ms"])
    row("image / guest RAM", lambda s: "%.3f" %
        (s["image_bytes"] / s["ram"]))
    row("image / populated RAM", lambda s: "%.3f" %
        (s["image_bytes"] / s["populated_rss"]))
    row("image allocated / populated RAM", lambda s: "%.3f" %
        (s["image_alloc"] / s["populated_rss"]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "bench":
        sys.exit(bench(sys.argv[2:]))
    print("usage: qemu_lib.py bench [options]", file=sys.stderr)
    sys.exit(2)
