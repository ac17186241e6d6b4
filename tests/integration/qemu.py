#!/usr/bin/env python3
# wpsnap snapshot --qemu against an unmodified QEMU (qemu-system-x86_64,
# TCG) running the test guest of tools/qguest (tests/integration/
# qemu_lib.py starts it and reads its progress):
#
# 1. verified byte for byte: the test stops the guest and saves its RAM
#    with pmemsave, wpsnap freezes it (leaving it paused, as it found it),
#    the test continues the guest, which writes at full speed during the
#    whole copy; the image, read through its guest-physical layout
#    (--physmem), must equal the pmemsave dump page for page. A second
#    dump taken afterwards must differ from the first, or the comparison
#    proved nothing. Anonymous RAM with THP, memfd share=on, three write
#    patterns, and a 1 GiB guest (anonymous).
# 2. live: wpsnap stops and continues the guest itself (QMP STOP and
#    RESUME seen on our own connection, in that order); with --no-stop,
#    no QMP stop at all.
# 3. QEMU survives us: we are SIGKILLed at each step (a test hook) and at
#    random moments; each time QEMU must run, its guest must report
#    progress, nothing may stay attached or registered with a userfaultfd,
#    and no process of ours may linger. Then a verified snapshot again.
# 4. errors: no socket, and a QMP socket busy with another client.
#
# Exit 77 (skip) only when qemu-system-x86_64 is not installed.
# Prints "N passed, N failed".
import os, queue, random, shutil, signal, subprocess, sys, tempfile
import threading, time, uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qemu_lib as ql  # noqa: E402
import wpstest  # noqa: E402
from wpstest import check, ko, ok  # noqa: E402

MiB = 1 << 20
TAG = "wpsnap-qemu-test-" + uuid.uuid4().hex


def note(msg):
    print("# " + msg, flush=True)


def env(kill=None):
    e = dict(os.environ)
    e["WPSNAP_QEMU_TEST_TAG"] = TAG      # finds our processes afterwards
    e.pop("WPSNAP_QEMU_TEST_KILL", None)
    e.pop("WPSNAP_ATTACH_TEST_KILL", None)
    if kill and kill.endswith(("-entry", "-exit")):
        # inside the attach's injected syscall (src/attach.c)
        e["WPSNAP_ATTACH_TEST_KILL"] = kill
    elif kill:
        e["WPSNAP_QEMU_TEST_KILL"] = kill
    return e


def ours():
    """Processes still carrying our tag (wpsnap or its watchdog)."""
    left = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % p, "rb") as f:
                if TAG.encode() in f.read():
                    left.append(int(p))
        except OSError:
            pass
    return left


class Snap:
    """wpsnap snapshot --qemu in the background; its stdout by lines."""

    def __init__(self, g, img, kill=None, extra=()):
        if os.path.exists(img + ".partial"):
            os.unlink(img + ".partial")
        self.p = subprocess.Popen(
            [ql.WPSNAP, "snapshot", "--qemu", g.qmp_wpsnap, "-o", img,
             "--overwrite"] + list(extra), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env(kill))
        self.q = queue.Queue()
        self.out = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.out.append(line)
            self.q.put(line)
        self.q.put(None)

    def wait_line(self, prefix, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                return False
            if line.startswith(prefix):
                return True
        return False

    def wait(self, timeout=600):
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.t.join(10)
        self.err = self.p.stderr.read()
        return self.p.returncode


def survives(g, what):
    """QEMU runs, its guest progresses, nothing of ours is left on it."""
    deadline = time.time() + 10
    st = None
    while time.time() < deadline:
        st = g.status()
        if st == "running" and g.tracer() == 0 and g.uffd_vmas() == 0 \
                and not ours():
            break
        time.sleep(0.05)
    check("%s: QEMU running" % what, st == "running", "status %s" % st)
    check("%s: guest reports progress" % what, g.progressing(5))
    check("%s: QEMU not traced" % what, g.tracer() == 0,
          "TracerPid %s" % g.tracer())
    check("%s: no mapping left registered with a userfaultfd" % what,
          g.uffd_vmas() == 0, "%d left" % g.uffd_vmas())
    left = ours()
    check("%s: no process of ours left" % what, not left, "pids %s" % left)
    for p in left:
        os.kill(p, signal.SIGKILL)


def verified(T, g, what, img):
    """Stop, pmemsave, freeze, cont, copy while the guest writes; compare.
    Returns the duration of the snapshot process (seconds) or None."""
    ref, phys, after = (os.path.join(T, n) for n in ("ref", "phys", "after"))
    g.qmp.cmd("stop")
    g.pmemsave(ref)
    t0 = time.monotonic()
    s = Snap(g, img)
    frozen = s.wait_line("frozen")
    st = g.status()
    c0 = g.count()
    g.qmp.cmd("cont")
    t_cont = time.monotonic()
    rc = s.wait()
    t_end = time.monotonic()
    if not check("%s: snapshot" % what, rc == 0 and frozen,
                 "exit %s: %s" % (rc, s.err.strip())):
        return None
    check("%s: guest left paused at the freeze, as we had paused it" % what,
          st == "paused", "status %s" % st)
    # The guest must have written during the copy, or this proves little.
    time.sleep(0.05)
    during = [x for x in g.window(t_cont, t_end)]
    check("%s: guest wrote during the copy" % what, len(during) >= 2,
          "%d progress lines in %.0f ms" % (len(during),
                                            (t_end - t_cont) * 1e3))
    ranges = ql.physmem(img, phys)
    total = sum(e - s_ for s_, e in ranges)
    pages, bad = ql.compare_pages(ref, phys, ranges)
    check("%s: image covers all guest RAM" % what, total == g.mem,
          "%d of %d bytes" % (total, g.mem))
    check("%s: image equals pmemsave at the freeze, page for page "
          "(%d pages)" % (what, pages), not bad and pages == g.mem // 4096,
          "%d pages differ, first at %s" % (len(bad), [hex(b) for b in
                                                     bad[:4]]))
    # The same comparison against the RAM of now must fail: the guest
    # wrote those pages after the freeze.
    g.qmp.cmd("stop")
    g.pmemsave(after)
    g.qmp.cmd("cont")
    _, changed = ql.compare_pages(ref, after, ranges)
    check("%s: the guest changed RAM after the freeze (%d pages, %d writes "
          "during the copy): the comparison can fail" % (
              what, len(changed), g.count() - c0), len(changed) > 100)
    for f in (ref, phys, after):
        os.unlink(f)
    return t_end - t0


def run_verified(T, mem, backing, pattern, what):
    g = ql.Guest(T, mem, backing, "pattern=%s" % pattern, name=backing)
    try:
        g.wait_ready(300)
        check("%s: guest runs" % what, g.progressing(10))
        if backing == "anon":
            thp = g.ram_thp()
            with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
                mode = f.read()
            if "[never]" in mode:
                note("%s: THP disabled on this host" % what)
            else:
                check("%s: guest RAM in transparent huge pages (%d MiB)"
                      % (what, (thp or 0) // MiB), thp and thp > 0)
        img = os.path.join(T, "img")
        d = verified(T, g, what, img)
        survives(g, what)
        if os.path.exists(img):
            os.unlink(img)
        return d
    finally:
        g.close()


def main():
    if not ql.find_qemu():
        print("1..0 # SKIP qemu-system-x86_64 is not installed "
              "(apt-get install qemu-system-x86; contrib/install-deps.sh "
              "does)")
        return 77
    if not os.path.exists(ql.GUEST):
        ko("test guest built", "%s missing (make check builds it)" %
           ql.GUEST)
        return 1
    T = tempfile.mkdtemp(prefix="wpsnap-qemu.", dir="/var/tmp")
    # a timeout's SIGTERM still runs the cleanup below (QEMU dies with us
    # in any case: qemu_lib sets its parent-death signal)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        tests(T)
    finally:
        for p in ours():
            os.kill(p, signal.SIGKILL)
        shutil.rmtree(T, ignore_errors=True)
    return wpstest.summary()


def tests(T):
    # 1. byte for byte
    dur = run_verified(T, 256, "anon", "random", "anon+THP 256M random")
    run_verified(T, 256, "memfd", "seq", "memfd 256M seq")
    run_verified(T, 256, "anon", "hot", "anon 256M hot")
    run_verified(T, 1024, "anon", "random", "anon 1G random")

    g = ql.Guest(T, 256, "anon", "pattern=random", name="live")
    try:
        g.wait_ready(300)
        img = os.path.join(T, "img")

        # 2. live: wpsnap stops and continues the guest itself
        g.qmp.poll_events(0.05)
        g.qmp.events.clear()
        s = Snap(g, img)
        rc = s.wait()
        g.qmp.poll_events(0.2)
        ev = [e["event"] for e in g.qmp.events
              if e["event"] in ("STOP", "RESUME")]
        if check("live: snapshot", rc == 0, s.err.strip()):
            check("live: QMP STOP then RESUME, once each", ev == ["STOP",
                                                                 "RESUME"],
                  ev)
            note("live: " + "".join(l for l in s.out
                                    if "guest paused" in l).strip())
            r = subprocess.run([ql.WPSNAP, "verify", img],
                               capture_output=True, text=True)
            check("live: image checksums verify", r.returncode == 0,
                  r.stderr.strip())
        survives(g, "live")

        # 2b. --no-stop: no QMP stop at all; QEMU's threads are held for
        # the freeze only
        g.qmp.poll_events(0.05)
        g.qmp.events.clear()
        s = Snap(g, img, extra=["--no-stop"])
        rc = s.wait()
        g.qmp.poll_events(0.2)
        ev = [e["event"] for e in g.qmp.events
              if e["event"] in ("STOP", "RESUME")]
        if check("--no-stop: snapshot", rc == 0, s.err.strip()):
            check("--no-stop: the guest was never stopped through QMP",
                  ev == [], ev)
            note("--no-stop: " + "".join(l for l in s.out
                                         if "guest paused" in l).strip())
            r = subprocess.run([ql.WPSNAP, "verify", img],
                               capture_output=True, text=True)
            check("--no-stop: image checksums verify", r.returncode == 0,
                  r.stderr.strip())
        survives(g, "--no-stop")

        # 3. killed at each step, then at random moments
        for point in ("connected", "userfaultfd-exit", "close-entry",
                      "attached", "stopped", "frozen", "copying"):
            g.qmp.poll_events(0.05)
            g.qmp.events.clear()
            s = Snap(g, img, kill=point)
            rc = s.wait()
            check("killed when %s: died as told" % point,
                  rc == -signal.SIGKILL, "exit %s: %s" % (rc, s.err))
            if point == "stopped":
                check("killed when %s: the watchdog continued QEMU" % point,
                      "continued it" in s.err, s.err.strip())
            elif point == "frozen":
                # QMP cont is part of the freeze now (the attach's outer
                # resume): nothing is left for the watchdog to do
                check("killed when frozen: QEMU already continued",
                      "continued it" not in s.err, s.err.strip())
            survives(g, "killed when %s" % point)
        seed = int(os.environ.get("WPSNAP_QEMU_TEST_SEED", time.time()))
        rnd = random.Random(seed)
        note("random kills: seed %d (WPSNAP_QEMU_TEST_SEED), over %.0f ms"
             % (seed, (dur or 1) * 1e3))
        # A kill inside the attach's injected syscall once left a QEMU
        # thread running on our registers, and QEMU died; the injection
        # now returns through a signal frame (src/attach.c, inject_arm),
        # and the points above kill us there on purpose.
        for i in range(5):
            delay = rnd.uniform(0, dur or 1)
            s = Snap(g, img)
            time.sleep(delay)
            s.p.send_signal(signal.SIGKILL)
            rc = s.wait()
            survives(g, "killed after %.0f ms (exit %s)" % (delay * 1e3, rc))
        # after all that, still snapshottable and exact
        verified(T, g, "after the kills", img)
        survives(g, "after the kills")

        # 4. errors
        r = subprocess.run([ql.WPSNAP, "snapshot", "--qemu",
                            os.path.join(T, "nosuch.sock"), "-o", img,
                            "--overwrite"], capture_output=True, text=True,
                           env=env())
        check("no socket: clear error", r.returncode == 1 and
              "cannot connect to QMP socket" in r.stderr, r.stderr)
        busy = ql.QMP(g.qmp_wpsnap)
        try:
            g.qmp.poll_events(0.05)
            g.qmp.events.clear()
            r = subprocess.run([ql.WPSNAP, "snapshot", "--qemu",
                                g.qmp_wpsnap, "-o", img, "--overwrite"],
                               capture_output=True, text=True, env=env(),
                               timeout=60)
            check("busy QMP socket: clear error", r.returncode == 1 and
                  "another client" in r.stderr, r.stderr)
            g.qmp.poll_events(0.1)
            check("busy QMP socket: guest never stopped",
                  not [e for e in g.qmp.events if e["event"] == "STOP"])
        finally:
            busy.close()
        survives(g, "errors")
    finally:
        g.close()


if __name__ == "__main__":
    sys.exit(main())
