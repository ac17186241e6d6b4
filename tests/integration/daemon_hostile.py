#!/usr/bin/env python3
# wpsnapd against hostile or clumsy clients, images and disks. Each case
# must end in a clear error (a reply, or an event for a job that had
# started) and leave the daemon serving: after every one, a new connection
# is answered and a good snapshot of a running guest completes and
# verifies. Cases: blank lines (ignored, as QMP does), a client that never
# reads its replies (closed at WPSD_OUT_MAX queued), a full filesystem
# (ENOSPC must reach the client and the guest as ENOSPC, not EIO),
# restores from garbage: random bytes, an empty file, truncated images, a
# directory, a FIFO (must not stall the loop), a missing file.
# Prints "N passed, N failed"; exit status 1 on any failure.
import os, socket, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wpstest
from wpstest import (GUEST, WPSNAP, Conn, check, ko, run, skip, start_daemon,
                     stop_guest, uffd_ready, vmm_guest)

T = tempfile.mkdtemp(prefix="wpsnapd-hostile.", dir="/var/tmp")
OUT_MAX = 4 << 20     # WPSD_OUT_MAX in daemon/server.h
n_good = 0


def snapshot(c, guest, path):
    """A third-party snapshot of guest into path: its end event."""
    if not uffd_ready(c, guest):
        raise RuntimeError("guest %s has no fresh userfaultfd" % guest)
    r = c.cmd("wps-snapshot-start", {"guest": guest, "path": path, "overwrite": True})
    if "return" not in r:
        raise RuntimeError("wps-snapshot-start: %s" % r)
    tok = r["return"]["token"]
    return c.event("WPS_SNAPSHOT_*", lambda d: d["token"] == tok, 120)


def serving(S, c, why):
    """After something bad: a new connection is answered and a good
    snapshot of vm completes and verifies."""
    global n_good
    try:
        n = Conn(S)
        r = n.cmd("query-guests")
        n.close()
        good = any(g["guest"] == "vm" for g in r.get("return", []))
        n_good += 1
        img = os.path.join(T, "good-%d.wpsnap" % n_good)
        e = snapshot(c, "vm", img)
        v = run([WPSNAP, "verify", img])
        check("after %s: daemon answers, a good snapshot completes and verifies" % why,
              good and e["event"] == "WPS_SNAPSHOT_COMPLETED" and v.returncode == 0,
              (r, e, v.stdout))
        return img
    except Exception as ex:
        ko("after %s: daemon still serving" % why, repr(ex))
        return None


def blank_lines(S, c):
    """QMP (QEMU's JSON streamer) ignores whitespace between messages: no
    reply, no error. The next request's reply must be the first message."""
    k = Conn(S)
    k.send_raw(b"\n\n   \n\t\r\n")
    r = k.cmd("query-version")   # asserts the reply carries our id
    check("blank lines: no reply, the next request answered first", "return" in r, r)
    k.send_raw(b"\n")
    r = k.cmd("query-version")
    check("blank line after a request: still nothing but the reply", "return" in r, r)
    k.close()
    serving(S, c, "blank lines")


def unread(S, c):
    """A client that sends requests and never reads: the daemon drops it
    once its queue would pass WPSD_OUT_MAX bytes, nobody else notices."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(S)
    req = b'{"execute":"qmp_capabilities"}\n' + b'{"execute":"query-commands"}\n' * 20000
    try:
        s.sendall(req)   # the daemon reads everything it is sent
    except OSError:
        pass             # or has already closed us
    # Now read: the daemon must have closed the connection (EOF), having
    # sent fewer bytes than the replies would have taken.
    got, eof = 0, False
    s.settimeout(60)
    try:
        while True:
            d = s.recv(1 << 16)
            if not d:
                eof = True
                break
            got += len(d)
    except OSError:
        eof = True       # ECONNRESET: closed with data unread on its side
    s.close()
    log = open(S + ".log").read()
    check("a client that does not read is closed (%d bytes delivered, limit %d)"
          % (got, OUT_MAX), eof and got < 20000 * 600 and
          "does not read its messages" in log, (got, eof))
    serving(S, c, "an unread connection")


def enospc(S, c):
    """A snapshot into a full filesystem: ENOSPC reaches the event, the
    third-party client and the guest itself, nothing is published."""
    full = os.path.join(T, "full")
    os.mkdir(full)
    r = run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", full])
    if r.returncode:
        skip("ENOSPC through the daemon", "cannot mount a tmpfs: " + r.stdout.strip())
        return
    try:
        e = snapshot(c, "vm", full + "/x.wpsnap")
        d = e["data"]
        check("full disk: WPS_SNAPSHOT_FAILED with errno ENOSPC, cause says so",
              e["event"] == "WPS_SNAPSHOT_FAILED" and d.get("errno") == "ENOSPC" and
              "No space left on device" in d.get("cause", ""), e)
        check("full disk: nothing published, no partial file left",
              not os.listdir(full), os.listdir(full))
        serving(S, c, "a full disk")
        # The guest's own snapshot through the daemon (the client library):
        # the errno it returns is the event's, not EIO.
        r = run([GUEST, "--daemon", S, "--name", "full", "--backing", "memfd",
                 "--size", "64M", "--warmup", "0.2", "--snapshot", full + "/y.wpsnap"],
                timeout=180)
        check("full disk: the guest is told 'No space left on device', not "
              "'Input/output error'", r.returncode == 1 and
              "through wpsnapd: No space left on device" in r.stdout and
              "Input/output error" not in r.stdout, r.stdout)
        check("full disk: nothing published for the guest either", not os.listdir(full),
              os.listdir(full))
        serving(S, c, "a guest's snapshot into a full disk")
    finally:
        run(["umount", full])


def restore(S, name, image):
    """wpsnap-guest --restore through the daemon: (exit status, output)."""
    r = run([GUEST, "--daemon", S, "--name", name, "--backing", "memfd", "--size", "64M",
             "--restore", image, "--duration", "0.3"], timeout=120)
    return r.returncode, r.stdout


def bad_restores(S, c, good):
    """Restores from images that are not images: each refused by the
    start's reply (or, for damage found later, a WPS_RESTORE_FAILED), the
    daemon serving on."""
    d = os.path.join(T, "bad")
    os.mkdir(d)
    data = open(good, "rb").read()
    cases = []
    with open(d + "/random", "wb") as f:
        f.write(os.urandom(1 << 20))
    cases.append(("random bytes", d + "/random"))
    open(d + "/empty", "wb").close()
    cases.append(("an empty file", d + "/empty"))
    for cut in (4096, len(data) // 2, len(data) - 1):
        p = d + "/cut-%d" % cut
        with open(p, "wb") as f:
            f.write(data[:cut])
        cases.append(("an image truncated to %d bytes" % cut, p))
    os.mkdir(d + "/dir")
    cases.append(("a directory", d + "/dir"))
    os.mkfifo(d + "/fifo")
    cases.append(("a FIFO nobody writes", d + "/fifo"))
    cases.append(("a missing file", d + "/nope"))
    for i, (what, path) in enumerate(cases):
        try:
            rc, out = restore(S, "bad%d" % i, path)
        except subprocess.TimeoutExpired:
            ko("restore from %s: the guest (or the daemon) hung" % what)
            continue
        check("restore from %s: refused with a reason, the guest not run on it" % what,
              rc != 0 and "wps-restore-start" in out and "graduated" not in out, out)
        serving(S, c, "a restore from %s" % what)
    n = Conn(S)
    r = n.cmd("query-guests")
    check("no refused restore left a guest behind",
          not [g for g in r["return"] if g["guest"].startswith("bad")], r)
    n.close()


def main():
    S = os.path.join(T, "wpsnapd.sock")
    start_daemon(S, "-v")
    c = Conn(S)
    vm = vmm_guest(S, "vm", "--verify-self", size="64M")
    if not check("a guest to snapshot between the cases", uffd_ready(c, "vm")):
        return
    good = serving(S, c, "nothing")
    for t in (blank_lines, unread, enospc):
        try:
            t(S, c)
        except Exception as e:
            ko(t.__name__, repr(e))
    if good:
        try:
            bad_restores(S, c, good)
        except Exception as e:
            ko("bad_restores", repr(e))
    rc, out = stop_guest(vm)
    check("the guest ran on, writable and intact (--verify-self)",
          rc == 0 and "verify-self" in out, out[-800:])
    c.cmd("quit")
    bad = wpstest.sanitizer_reports(T)
    check("no sanitizer report", not bad, bad)


wpstest.run_main(main, T)
