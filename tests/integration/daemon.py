#!/usr/bin/env python3
# wpsnapd end to end: the QMP protocol (greeting, negotiation, every
# command, every kind of bad input, each followed by a command that must
# still work), fd validation, third-party and VMM-triggered snapshots of
# wpsnap-guest --daemon verified against the guest's ledger, overwrite,
# pause timeout, cancel, concurrent guests, VMM disconnect, and SIGKILL of
# the daemon mid-snapshot (the guest must stay intact and writable).
# Prints "N passed, N failed"; exit status 1 on any failure.
import json, os, random, signal, struct
import subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wpstest
from wpstest import (WPSNAPD, GUEST, WPSNAP, Conn, check, err, err_class, ko, new_uffd, ok,
                     procs, run, skip, start_daemon, stop_guest, uffd_ready, vmm_guest,
                     wait_for)

T = tempfile.mkdtemp(prefix="wpsnapd-test.", dir="/var/tmp")

def usable(c, name):
    try:
        r = c.cmd("query-version")
        check(name + ": connection still usable", "return" in r, r)
    except Exception as e:
        ko(name + ": connection still usable", e)

def expect_error(c, name, execute, args=None, cls="GenericError", fds=(), word=None):
    try:
        r = c.cmd(execute, args, fds)
        good = err_class(r) == cls and (word is None or word in r["error"]["desc"])
        check(name, good, r)
    except Exception as e:
        ko(name, e)
    usable(c, name)

def wait_registered(c, name, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        r = c.cmd("query-guests")
        if any(g["guest"] == name for g in r["return"]):
            return True
        time.sleep(0.05)
    return False

def wp_pages(addr, size):
    """Pages of our own [addr, addr+size) whose pagemap has the uffd-wp bit."""
    n = 0
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(addr // 4096 * 8)
        data = f.read(size // 4096 * 8)
    for (v,) in struct.iter_unpack("<Q", data):
        if v & (1 << 57):
            n += 1
    return n

def verify(img, ledger):
    r = subprocess.run([WPSNAP, "verify", img, "--ledger", ledger],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return r.returncode == 0, r.stdout

def wait_file(path, timeout=10):
    end = time.time() + timeout
    while time.time() < end and not os.path.exists(path):
        time.sleep(0.02)
    return os.path.exists(path)

def snap_done(c, guest):
    e = c.event("WPS_SNAPSHOT_*", lambda d: d["guest"] == guest, 30)
    if e["event"] != "WPS_SNAPSHOT_COMPLETED":
        raise RuntimeError("snapshot of %s: %s" % (guest, e))
    return e

def protocol_tests(S):
    c = Conn(S, negotiate=False)
    g = c.greeting
    check("greeting", "QMP" in g and "wpsnap" in g["QMP"]["version"]
          and g["QMP"]["capabilities"] == [], g)
    r = c.cmd("query-version")
    check("command before qmp_capabilities", err_class(r) == "CommandNotFound"
          and "qmp_capabilities" in r["error"]["desc"], r)
    r = c.cmd("qmp_capabilities")
    check("qmp_capabilities", r.get("return") == {} and r.get("id") == c.n, r)
    r = c.cmd("query-version")
    check("query-version", r["return"]["wpsnap"]["major"] >= 0 and r["return"]["protocol"] == 1, r)
    r = c.cmd("query-commands")
    check("query-commands", {"name": "wps-snapshot-start"} in r["return"], r)
    r = c.cmd("query-guests")
    check("query-guests (empty)", r["return"] == [], r)
    expect_error(c, "unknown command", "frobnicate", cls="CommandNotFound")
    c.send_raw(b'{"execute": "query-version", \n')
    r = c.reply()
    check("malformed JSON", err_class(r) == "GenericError" and "JSON" in r["error"]["desc"], r)
    usable(c, "malformed JSON")
    c.send_raw(b'[1, 2]\n')
    r = c.reply()
    check("request not an object", err_class(r) == "GenericError", r)
    usable(c, "request not an object")
    expect_error(c, "wrong type", "getfd", {"fdname": 5}, word="fdname")
    expect_error(c, "wrong type (negative pid)", "wps-guest-register",
                 {"guest": "x", "pid": -1, "uffd": "u", "regions": []}, word="pid")
    expect_error(c, "unknown key", "query-version", {"frob": 1}, word="frob")
    c.send_raw(b'{"execute": "query-version", "frob": 1, "id": "k"}\n')
    r = c.reply()
    check("unknown envelope key", err_class(r) == "GenericError" and r.get("id") == "k", r)
    usable(c, "unknown envelope key")
    expect_error(c, "missing key", "query-snapshot", {}, word="guest")
    c.send_raw(b'{"execute": "query-version", "arguments": {"x": "' + b"a" * 70000 + b'"}}\n')
    r = c.reply()
    check("oversized line", err_class(r) == "GenericError" and "exceeds" in r["error"]["desc"], r)
    usable(c, "oversized line")
    expect_error(c, "getfd without an fd", "getfd", {"fdname": "x"}, word="no file descriptor")
    expect_error(c, "unknown guest", "query-snapshot", {"guest": "nope"}, cls="DeviceNotFound")
    expect_error(c, "unknown guest (start)", "wps-snapshot-start",
                 {"guest": "nope", "path": T + "/x"}, cls="DeviceNotFound")
    expect_error(c, "unknown guest (cancel)", "wps-snapshot-cancel", {"guest": "nope"},
                 cls="DeviceNotFound")
    expect_error(c, "stale pause token", "wps-vcpus-paused", {"token": 999})

    # fds that are not what they claim
    with open(T + "/regular", "w") as f:
        f.write("x" * 8192)
    rf = os.open(T + "/regular", os.O_RDWR)
    r = c.cmd("getfd", {"fdname": "reg"}, fds=[rf])
    check("getfd of a regular file", r.get("return") == {}, r)
    mfd = os.memfd_create("test-small")
    os.ftruncate(mfd, 4096)
    r = c.cmd("getfd", {"fdname": "small"}, fds=[mfd])
    check("getfd of a memfd", r.get("return") == {}, r)
    regions = [{"host-addr": 0x100000, "size": 1 << 20, "memfd": "small"}]
    expect_error(c, "regular file as uffd", "wps-guest-register",
                 {"guest": "bad", "pid": os.getpid(), "uffd": "reg", "regions": regions},
                 word="not a userfaultfd")
    u = new_uffd()
    c.cmd("getfd", {"fdname": "u"}, fds=[u])
    os.close(u)
    expect_error(c, "memfd smaller than its region", "wps-guest-register",
                 {"guest": "bad", "pid": os.getpid(), "uffd": "u", "regions": regions},
                 word="smaller")
    expect_error(c, "regular file as memfd", "wps-guest-register",
                 {"guest": "bad", "pid": os.getpid(), "uffd": "u",
                  "regions": [{"host-addr": 0x100000, "size": 4096, "memfd": "reg"}]},
                 word="not a memfd")
    expect_error(c, "region without memfd", "wps-guest-register",
                 {"guest": "bad", "pid": os.getpid(), "uffd": "u",
                  "regions": [{"host-addr": 0x100000, "size": 4096}]}, word="anonymous")
    expect_error(c, "memfd not mapped at host-addr", "wps-guest-register",
                 {"guest": "bad", "pid": os.getpid(), "uffd": "u",
                  "regions": [{"host-addr": 0x100000, "size": 4096, "memfd": "small"}]},
                 word="mapped")
    r = c.cmd("closefd", {"fdname": "reg"})
    check("closefd", r.get("return") == {}, r)
    expect_error(c, "closefd of an unknown name", "closefd", {"fdname": "reg"})
    os.close(rf)
    os.close(mfd)
    c.close()

def python_vmm_tests(S):
    """A VMM written here: registers its own memfd, never answers pauses."""
    size = 4 << 20
    c = Conn(S)
    mfd, m, addr = wpstest.memfd_ram("test-guest", size)
    u = new_uffd()
    c.cmd("getfd", {"fdname": "u"}, fds=[u])
    os.close(u)
    c.cmd("getfd", {"fdname": "mem"}, fds=[mfd])
    reg = {"guest": "py", "pid": os.getpid(), "uffd": "u",
           "regions": [{"host-addr": addr, "size": size, "memfd": "mem", "name": "ram"}],
           "device-state": "aGVsbG8gZGV2aWNlcw=="}
    r = c.cmd("wps-guest-register", reg)
    check("wps-guest-register", r.get("return") == {}, r)
    expect_error(c, "duplicate guest name", "wps-guest-register", reg, word="already")
    r = c.cmd("query-guests")
    check("query-guests lists the guest", r["return"] and r["return"][0]["guest"] == "py"
          and r["return"][0]["uffd-ready"], r)
    r = c.cmd("query-snapshot", {"guest": "py"})
    check("query-snapshot (none yet)", r["return"]["status"] == "none", r)
    img = T + "/py.img"
    expect_error(c, "relative path refused", "wps-snapshot-start",
                 {"guest": "py", "path": "py.img"}, word="absolute")
    t0 = time.time()
    r = c.cmd("wps-snapshot-start", {"guest": "py", "path": img, "pause-timeout-ms": 300})
    check("wps-snapshot-start", "token" in r.get("return", {}), r)
    e = c.event("WPS_PAUSE_REQUEST")
    check("pause request sent to the owner", e["data"]["guest"] == "py"
          and e["data"]["token"] == r["return"]["token"], e)
    e = c.event("WPS_SNAPSHOT_FAILED", timeout=10)
    dt = time.time() - t0
    # not before the 300 ms; how long after depends on the machine's load
    check("pause timeout fails the snapshot", "timed out" in e["data"]["cause"]
          and dt > 0.25, (e, dt))
    c.event("WPS_RESUME_REQUEST")
    ok("resume request after the timeout")
    check("no image after a failure", not os.path.exists(img) and
          not os.path.exists(img + ".partial"))
    check("no write-protection left", wp_pages(addr, size) == 0)
    m[0] = 2   # would hang with a leaked protection and nobody reading
    ok("guest memory writable after the timeout")
    r = c.cmd("query-snapshot", {"guest": "py"})
    check("query-snapshot after failure", r["return"]["status"] == "failed"
          and "timed out" in r["return"]["cause"], r)
    c.event("WPS_UFFD_REQUEST")
    ok("uffd request after the uffd was spent")
    expect_error(c, "start with a spent uffd", "wps-snapshot-start",
                 {"guest": "py", "path": img}, word="userfaultfd")
    u = new_uffd()
    c.cmd("getfd", {"fdname": "u2"}, fds=[u])
    os.close(u)
    r = c.cmd("wps-guest-set-uffd", {"guest": "py", "uffd": "u2"})
    check("wps-guest-set-uffd", r.get("return") == {}, r)
    # Now answer the pause: a complete snapshot driven by this VMM.
    # With the device state at this pause, in a memfd: larger than a
    # request line could carry in base64.
    r = c.cmd("wps-snapshot-start", {"guest": "py", "path": img})
    e = c.event("WPS_PAUSE_REQUEST")
    state = (b"device state at pause %d;" % e["data"]["token"]) * 9000
    sfd = os.memfd_create("device-state")
    os.write(sfd, state)
    c.cmd("getfd", {"fdname": "ds"}, fds=[sfd])
    os.close(sfd)
    r = c.cmd("wps-vcpus-paused", {"token": e["data"]["token"], "device-state": "ds"})
    check("wps-vcpus-paused with the device state", r.get("return") == {}, r)
    e = c.event("WPS_RESUME_REQUEST")
    r = c.cmd("wps-vcpus-resumed", {"token": e["data"]["token"]})
    check("wps-vcpus-resumed", r.get("return") == {}, r)
    e = snap_done(c, "py")
    check("snapshot via a hand-written VMM", e["data"]["populated-bytes"] == size, e)
    r = subprocess.run([WPSNAP, "export", img, "--blob", "device-state", "-o",
                        T + "/ds.out"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    check("the image's device-state is the one handed at the pause (%d bytes)" %
          len(state), r.returncode == 0 and open(T + "/ds.out", "rb").read() == state,
          r.stdout)
    c.event("WPS_UFFD_REQUEST")
    r = c.cmd("wps-guest-unregister", {"guest": "py"})
    check("wps-guest-unregister", r.get("return") == {}, r)
    expect_error(c, "unregistered guest is gone", "query-snapshot", {"guest": "py"},
                 cls="DeviceNotFound")
    # Disconnect cleans up: register again, drop the connection.
    u = new_uffd()
    c.cmd("getfd", {"fdname": "u"}, fds=[u])
    os.close(u)
    c.cmd("getfd", {"fdname": "mem"}, fds=[mfd])
    reg.pop("device-state")
    r = c.cmd("wps-guest-register", reg)
    c.close()
    o = Conn(S)
    # the daemon notices the close when it next polls: wait for it
    check("VMM disconnect unregisters its guests",
          wait_for(lambda: o.cmd("query-guests")["return"] == [], 30))
    o.close()
    del m
    os.close(mfd)

def guest_tests(S):
    c = Conn(S)
    led = T + "/g1.ledger"
    g1 = vmm_guest(S, "g1", "--ledger", led, "--verify-self", "--device-state")
    if not check("wpsnap-guest --daemon registers", wait_registered(c, "g1")):
        return
    img = T + "/g1.img"
    r = c.cmd("wps-snapshot-start", {"guest": "g1", "path": img})
    check("third-party start", "return" in r, r)
    r = c.cmd("query-snapshot", {"guest": "g1"})
    check("query-snapshot while running", r["return"]["status"] in
          ("setup", "pausing", "freezing", "active", "publishing", "completed"), r)
    e = c.event("WPS_SNAPSHOT_FROZEN", lambda d: d["guest"] == "g1")
    check("FROZEN event", e["data"]["path"] == img and "seconds" in e["timestamp"], e)
    e = snap_done(c, "g1")
    check("COMPLETED event", e["data"]["pause-ns"] > 0 and e["data"]["populated-bytes"] > 0, e)
    print("# third-party: daemon pause %.1f us, handshake %.1f us, total %.1f ms" %
          (e["data"]["pause-ns"] / 1e3, e["data"]["handshake-ns"] / 1e3,
           e["data"]["total-ns"] / 1e6))
    r = c.cmd("query-snapshot", {"guest": "g1"})
    check("query-snapshot after completion", r["return"]["status"] == "completed", r)
    if wait_file(led):
        good, out = verify(img, led)
        check("third-party image verifies against the ledger", good, out)
    else:
        ko("guest wrote its ledger")
    expect_error(c, "existing image not overwritten", "wps-snapshot-start",
                 {"guest": "g1", "path": img}, word="exists")
    # The uffd was spent; the client library re-arms it on WPS_UFFD_REQUEST.
    uffd_ready(c, "g1")
    os.unlink(led)
    r = c.cmd("wps-snapshot-start", {"guest": "g1", "path": img, "overwrite": True})
    check("overwrite (second snapshot, re-armed uffd)", "return" in r, r)
    snap_done(c, "g1")
    if wait_file(led):
        good, out = verify(img, led)
        check("overwritten image verifies", good, out)
    else:
        ko("guest wrote its second ledger")
    r = subprocess.run([WPSNAP, "export", img, "--blob", "device-state", "-o",
                        T + "/g1.ds"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    ds = open(T + "/g1.ds").read() if r.returncode == 0 else r.stdout
    check("the client library hands the device state of the pause (%r)" % ds.strip(),
          ds == "wpsnap-guest g1 pause 2\n", ds)

    # cancel, and two guests at once
    g2 = vmm_guest(S, "g2", "--ledger", T + "/g2.ledger", size="256M")
    uffd_ready(c, "g2")
    r = c.cmd("wps-snapshot-start", {"guest": "g2", "path": T + "/g2c.img"})
    r = c.cmd("wps-snapshot-cancel", {"guest": "g2"})
    check("wps-snapshot-cancel", r.get("return") == {}, r)
    e = c.event("WPS_SNAPSHOT_CANCELLED", lambda d: d["guest"] == "g2")
    check("CANCELLED event; no image left", not os.path.exists(T + "/g2c.img")
          and not os.path.exists(T + "/g2c.img.partial"), e)
    expect_error(c, "cancel with nothing running", "wps-snapshot-cancel", {"guest": "g2"})
    uffd_ready(c, "g1")   # the re-armed uffds arrive
    uffd_ready(c, "g2")
    for p in (T + "/g1.ledger", T + "/g2.ledger"):
        if os.path.exists(p):
            os.unlink(p)
    t0 = time.time()
    r1 = c.cmd("wps-snapshot-start", {"guest": "g1", "path": T + "/c1.img"})
    r2 = c.cmd("wps-snapshot-start", {"guest": "g2", "path": T + "/c2.img"})
    check("two starts accepted", "return" in r1 and "return" in r2, (r1, r2))
    snap_done(c, "g1")
    snap_done(c, "g2")
    print("# two guests concurrently: %.2f s" % (time.time() - t0))
    for n in ("1", "2"):
        if wait_file(T + "/g%s.ledger" % n):
            good, out = verify(T + "/c%s.img" % n, T + "/g%s.ledger" % n)
            check("concurrent snapshot of g%s verifies" % n, good, out)
        else:
            ko("ledger of g" + n)
    progress = [e for e in c.events if e["event"] == "WPS_SNAPSHOT_PROGRESS"]
    check("progress events", len(progress) > 0, len(progress))
    rc, out = stop_guest(g1)
    check("guest g1 verify-self after serving snapshots", rc == 0
          and "verify-self" in out, out)
    stop_guest(g2)
    c.close()

def vmm_triggered_tests(S):
    for extra in ([], ["--self-pause"]):
        img = T + "/vmm%d.img" % len(extra)
        r = subprocess.run([GUEST, "--daemon", S, "--backing", "memfd", "--size", "128M",
                            "--warmup", "0.2", "--snapshot", img, "--ledger", img + ".ledger"]
                           + extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        check("VMM-triggered snapshot %s" % " ".join(extra), r.returncode == 0
              and "verify OK" in r.stdout, r.stdout)
        print("# " + "".join(l for l in r.stdout.splitlines(True) if "paused" in l).strip())
        if r.returncode == 0:
            good, out = verify(img, img + ".ledger")
            check("VMM-triggered image verifies %s" % " ".join(extra), good, out)

def kill_tests():
    rnd = random.Random(os.getpid())
    for i in range(3):
        S = T + "/k%d.sock" % i
        d = start_daemon(S)
        c = Conn(S)
        g = vmm_guest(S, "k", "--verify-self", size="256M")
        if not wait_registered(c, "k"):
            ko("kill %d: guest registered" % i)
            continue
        c.cmd("wps-snapshot-start", {"guest": "k", "path": T + "/k%d.img" % i})
        time.sleep(rnd.uniform(0.0, 0.4))
        d.kill()
        d.wait()
        try:
            rc, out = stop_guest(g, 30)
            check("kill %d: guest intact and writable after SIGKILL" % i,
                  rc == 0 and "verify-self" in out, out)
        except subprocess.TimeoutExpired:
            g.kill()
            ko("kill %d: guest hung (protection leaked)" % i)
        # Whether the copy finished before the kill depends on the load:
        # either nothing was published, or what was is a whole image.
        img = T + "/k%d.img" % i
        v = run([WPSNAP, "verify", img]) if os.path.exists(img) else None
        check("kill %d: nothing published, or a complete image" % i,
              v is None or v.returncode == 0, v and v.stdout)
        c.close()

def restore_tests(S):
    """Lazy restore through wpsnapd into wpsnap-guest --daemon --restore:
    its RAM starts empty, writers run from the first instant, and at the
    end every block must be what the image held (or what the writers wrote
    since). The working set: the first restore records IMAGE.wset, the
    second prefetches exactly that record first, "working-set": false
    neither reads nor writes it. Also over NBD, a guest of the wrong size,
    a damaged image."""
    c = Conn(S)
    d = T + "/rs"
    r = subprocess.run([WPSNAP, "demo", "--keep", d, "--backing", "memfd", "--size", "64M"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not check("restore: an image to restore (demo)", r.returncode == 0, r.stdout):
        return
    img, led = d + "/demo.wpsnap", d + "/demo.ledger"

    def restore(name, image, size="64M", timeout=90, ledger=led, extra=()):
        p = subprocess.run([GUEST, "--daemon", S, "--name", name, "--backing", "memfd",
                            "--size", size, "--rate", "8", "--restore", image,
                            "--duration", "0.3"] + list(extra) +
                           (["--restore-ledger", ledger, "--verify-self"] if ledger else []),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        return p.returncode, p.stdout

    rc, out = restore("rs1", img)
    check("restore: guest ran at once, graduated, every block as in the image",
          rc == 0 and "graduated" in out and "blocks match the ledger" in out, out)
    e = c.event("WPS_RESTORE_COMPLETED", lambda x: x["guest"] == "rs1", 10)
    check("restore: WPS_RESTORE_COMPLETED with its figures",
          e["data"]["remaining-bytes"] == 0 and e["data"]["full-ns"] > 0, e)
    working_set_tests(c, restore, img, e)
    if subprocess.run(["sh", "-c", "command -v nbdkit"], stdout=subprocess.DEVNULL).returncode:
        skip("restore over NBD", "nbdkit not installed")
    else:
        sock = d + "/nbd.sock"
        nbd = subprocess.Popen(["nbdkit", "-f", "-r", "-U", sock, "file", img],
                               stderr=subprocess.DEVNULL)
        procs.append(nbd)
        wait_file(sock)
        rc, out = restore("rs2", "nbd+unix:///?socket=" + sock)
        check("restore over NBD through wpsnapd: every block as in the image",
              rc == 0 and "blocks match the ledger" in out, out)
        e = c.event("WPS_RESTORE_COMPLETED", lambda x: x["guest"] == "rs2", 10)
        ws = e["data"].get("working-set", {})
        check("restore over NBD: no working-set file (nothing beside it)",
              ws.get("file", "") is None and ws.get("saved") is False, ws)
        nbd.terminate()
        nbd.wait()
    rc, out = restore("rs3", img, size="32M", ledger=None)
    check("restore into a guest of another size: refused, named", rc != 0 and
          "does not fit" in out, out)
    bad = d + "/bad.wpsnap"
    data = bytearray(open(img, "rb").read())
    for off in range(4 << 20, 12 << 20, 1 << 20):   # inside the region's data
        data[off + 123] ^= 0xff
    open(bad, "wb").write(data)
    rc, out = restore("rs4", bad)
    e = c.event("WPS_RESTORE_FAILED", lambda x: x["guest"] == "rs4", 30)
    check("damaged image: WPS_RESTORE_FAILED names the offset, the guest is "
          "stopped (rc %s), never given wrong data" % rc,
          rc != 0 and "blocks match" not in out and e["data"].get("bad-offset", 0) > 0, (e, out))
    c.close()


def wset_file_bytes(path):
    """Bytes of region 0 held by a working-set file (docs/FORMAT.md 10.2):
    a 64-byte header ("WPSNAPWS", the range count at 32), then 24-byte
    records (region u32, reserved u32, block u64, count u64)."""
    data = open(path, "rb").read()
    if data[:8] != b"WPSNAPWS":
        raise ValueError("%s: not a working-set file" % path)
    (nr,) = struct.unpack_from("<Q", data, 32)
    total = 0
    for i in range(nr):
        region, _, _, count = struct.unpack_from("<IIQQ", data, 64 + 24 * i)
        total += count if region == 0 else 0
    return total * 4096

def working_set_tests(c, restore, img, e1):
    """The daemon's lazy restore follows the library's working-set plan,
    as wpsnap restore --lazy does (tests/integration/wset.sh)."""
    wpath = img + ".wset"
    ws = e1["data"].get("working-set", {})
    check("restore: working set used, recorded in IMAGE.wset beside the image",
          ws.get("used") is True and ws.get("file") == wpath and
          ws.get("saved") is True and os.path.exists(wpath), (ws, wpath))
    try:
        held = wset_file_bytes(wpath)
    except Exception as ex:
        ko("restore: IMAGE.wset readable", ex)
        return
    check("restore: IMAGE.wset holds what the event reports, this run's faults",
          held == ws.get("file-bytes") and held > 0, (held, ws))
    rc, out = restore("rs5", img)
    check("second restore: every block as in the image",
          rc == 0 and "blocks match the ledger" in out, out)
    e = c.event("WPS_RESTORE_COMPLETED", lambda x: x["guest"] == "rs5", 10)
    ws = e["data"].get("working-set", {})
    # Exactly the first restore's record, handed to the pager first.
    # Fault counts depend on timing (reported, not asserted).
    check("second restore: prefetches the recorded working set first "
          "(faults %s, then %s)" % (e1["data"]["faults"], e["data"]["faults"]),
          ws.get("recorded-bytes") == held and ws.get("ranges", 0) > 0 and
          ws.get("saved") is True, ws)
    before = open(wpath, "rb").read()
    rc, out = restore("rs6", img, extra=["--restore-no-working-set"])
    e = c.event("WPS_RESTORE_COMPLETED", lambda x: x["guest"] == "rs6", 10)
    ws = e["data"].get("working-set", {})
    check('"working-set": false: restored, the file neither used nor written',
          rc == 0 and "blocks match the ledger" in out and ws.get("used") is False
          and ws.get("ranges") == 0 and ws.get("saved") is False and
          open(wpath, "rb").read() == before, (ws, out))


# The non-root VMM of unprivileged_path_tests: registers its own memfd
# (its uffd from the /dev/userfaultfd fd it inherits: opening the device
# is root's, the ioctl binds the uffd to the caller's mm), then sends each
# request, drives a snapshot or restore that started to its end, hands
# over a fresh uffd when the last one was spent, and prints
# [name, reply, end event or None] per request.
NONROOT_VMM = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from wpstest import Conn, memfd_ram, new_uffd
S, dev, tries = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
size = 4 << 20
def give_uffd(c, name):
    u = new_uffd(dev)
    c.cmd("getfd", {"fdname": name}, fds=[u])
    os.close(u)
c = Conn(S)
mfd, m, addr = memfd_ram("nonroot-guest", size, lambda p: p % 251)
give_uffd(c, "u")
c.cmd("getfd", {"fdname": "mem"}, fds=[mfd])
r = c.cmd("wps-guest-register", {"guest": "mine", "pid": os.getpid(), "uffd": "u",
          "regions": [{"host-addr": addr, "size": size, "memfd": "mem"}]})
print(json.dumps(["register", r, None]), flush=True)
for name, cmd, args in tries:
    r = c.cmd(cmd, args)
    end = None
    if "return" in r and cmd == "wps-snapshot-start":
        e = c.event("WPS_PAUSE_REQUEST", timeout=120)
        c.cmd("wps-vcpus-paused", {"token": e["data"]["token"]})
        e = c.event("WPS_RESUME_REQUEST", timeout=120)
        c.cmd("wps-vcpus-resumed", {"token": e["data"]["token"]})
        end = c.event("WPS_SNAPSHOT_*", timeout=120)
    elif "return" in r and cmd == "wps-restore-start":
        end = c.event("WPS_RESTORE_COMPLETED", timeout=120)
    g = [g for g in c.cmd("query-guests")["return"] if g["guest"] == "mine"]
    if g and not g[0]["uffd-ready"]:
        give_uffd(c, "u2")
        c.cmd("wps-guest-set-uffd", {"guest": "mine", "uffd": "u2"})
    print(json.dumps([name, r, end]), flush=True)
"""


def unprivileged_path_tests(S, d):
    """Paths a group member names are checked with its own credentials
    (daemon/access.c): it may not snapshot into a root-only directory,
    restore from a root-only file, replace a root-owned image, write
    through a planted symlink, read a root-only file as a reflink source,
    nor checkpoint into a root-only directory; and it may do each of these
    in a directory it owns."""
    own, ronly = d + "/own", d + "/rootonly"
    os.mkdir(own, 0o700)
    os.chown(own, 65534, 65534)
    os.mkdir(ronly, 0o700)
    rimg = own + "/root.img"            # root's image in the member's dir
    with open(rimg, "wb") as f:
        f.write(b"root's image")
    secret = d + "/secret"              # 0600 root, in a 0755 directory
    with open(secret, "wb") as f:
        f.write(b"root only")
    os.chmod(secret, 0o600)
    mine = own + "/b.img"               # the member's own file, replaced
    with open(mine, "wb") as f:
        f.write(b"member's file")
    os.chown(mine, 65534, 65534)
    os.symlink(ronly + "/planted", own + "/link.img")
    os.symlink(ronly + "/planted2", own + "/p.img.partial")
    deny = "permission denied: "
    tries = [
        ("snapshot into its own directory", "wps-snapshot-start",
         {"guest": "mine", "path": own + "/a.img"}, None),
        ("snapshot into a root-only directory", "wps-snapshot-start",
         {"guest": "mine", "path": ronly + "/x.img"},
         deny + ronly + ": no write and search access"),
        ("overwrite a root-owned image", "wps-snapshot-start",
         {"guest": "mine", "path": rimg, "overwrite": True},
         deny + rimg + ": exists and would be replaced: no write access"),
        ("create through a symlink planted as the image", "wps-snapshot-start",
         {"guest": "mine", "path": own + "/link.img", "overwrite": True},
         deny + own + "/link.img: is a symbolic link"),
        ("create through a symlink planted as the partial file", "wps-snapshot-start",
         {"guest": "mine", "path": own + "/p.img"},
         deny + own + "/p.img.partial: is a symbolic link"),
        ("replace its own file", "wps-snapshot-start",
         {"guest": "mine", "path": mine, "overwrite": True}, None),
        ("checkpoint into a root-only directory", "wps-checkpoint-start",
         {"guest": "mine", "dir": ronly}, deny + ronly + ": no write and search"),
        ("reflink a root-only source", "transaction",
         {"guest": "mine", "actions": [{"type": "disk-reflink", "source": secret,
                                        "target": own + "/copy"}]},
         deny + secret + ": no read access"),
        ("restore from a root-only (0600) file", "wps-restore-start",
         {"guest": "mine", "image": d + "/secret.img"},
         deny + d + "/secret.img: no read access"),
        ("restore from its own image", "wps-restore-start",
         {"guest": "mine", "image": own + "/a.img"}, None),
    ]
    dev = os.open("/dev/userfaultfd", os.O_RDWR | os.O_CLOEXEC)
    os.set_inheritable(dev, True)
    try:
        # secret.img: a valid image (root's copy of the member's), 0600
        child = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=-all", sys.executable, "-c", NONROOT_VMM,
             os.path.dirname(os.path.abspath(__file__)), S, str(dev),
             json.dumps([t[:3] for t in tries])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            pass_fds=[dev])
        got, out = {}, []
        for line in child.stdout:
            out.append(line)
            try:
                name, rep, end = json.loads(line)
            except ValueError:
                continue
            got[name] = (rep, end)
            if name == "snapshot into its own directory" and end:
                subprocess.run(["cp", own + "/a.img", d + "/secret.img"])
                os.chmod(d + "/secret.img", 0o600)
        child.wait(180)
    finally:
        os.close(dev)
    check("non-root VMM registered its own guest",
          got.get("register", ({}, None))[0].get("return") == {}, "".join(out))
    for name, cmd, _, want in tries:
        rep, end = got.get(name, ({}, None))
        if want is None:
            done = "WPS_SNAPSHOT_COMPLETED" if cmd == "wps-snapshot-start" \
                else "WPS_RESTORE_COMPLETED"
            check("non-root client may %s" % name, "return" in rep and end and
                  end["event"] == done, (rep, end))
        else:
            check("non-root client may not %s: %s..." % (name, want),
                  err_class(rep) == "GenericError" and err(rep).startswith(want)
                  and "uid 65534" in err(rep), rep)
    v = run([WPSNAP, "verify", own + "/a.img"])
    v2 = run([WPSNAP, "verify", mine])
    check("its own image verifies; nothing appeared where it may not write",
          v.returncode == 0 and v2.returncode == 0 and os.listdir(ronly) == [] and
          open(rimg, "rb").read() == b"root's image" and
          os.path.islink(own + "/link.img") and os.path.islink(own + "/p.img.partial")
          and not os.path.exists(own + "/copy"), (v.stdout, os.listdir(ronly)))


def unprivileged_tests():
    """A member of --group who is not root: may connect, may register only
    its own memory, may not attach to anything, may read every guest's
    state but act on none it did not register, may not quit the daemon nor
    run a transaction's disk-hook (docs/PROTOCOL.md, "Security model")."""
    if subprocess.run(["sh", "-c", "command -v setpriv"],
                      stdout=subprocess.DEVNULL).returncode:
        skip("unprivileged client", "setpriv not installed")
        return
    d = tempfile.mkdtemp(prefix="wpsnapd-group.", dir="/var/tmp")
    os.chmod(d, 0o755)
    S = d + "/g.sock"
    try:
        p = start_daemon(S, "--group", "nogroup")
        st = os.stat(S)
        check("--group: socket mode 0660, group nogroup",
              (st.st_mode & 0o777) == 0o660 and st.st_gid == 65534, oct(st.st_mode))
        root = Conn(S)
        guest = vmm_guest(S, "rootvm")
        if not check("a root VMM's guest for the non-root client to try",
                     wait_registered(root, "rootvm")):
            return
        # Each request the non-root client sends, and what it must get:
        # None = a return; a string = a GenericError whose desc holds it.
        deny = "permission denied"
        tries = [
            ("register", "wps-guest-register", {"guest": "x", "pid": 1, "uffd": "u",
             "regions": [{"host-addr": 4096, "size": 4096, "memfd": "m"}]},
             "only its own memory"),
            ("attach", "wps-guest-attach", {"guest": "y", "pid": 1},
             "needs root or CAP_SYS_PTRACE"),
            ("quit", "quit", None, deny + ": quit is for root only"),
            ("snapshot another's guest", "wps-snapshot-start",
             {"guest": "rootvm", "path": d + "/stolen.img"}, deny),
            ("cancel on another's guest", "wps-snapshot-cancel", {"guest": "rootvm"}, deny),
            ("unregister another's guest", "wps-guest-unregister", {"guest": "rootvm"}, deny),
            ("set-uffd of another's guest", "wps-guest-set-uffd",
             {"guest": "rootvm", "uffd": "u"}, deny),
            ("checkpoints of another's guest", "wps-checkpoint-start",
             {"guest": "rootvm", "dir": d + "/ck"}, deny),
            ("stop another's checkpoints", "wps-checkpoint-stop", {"guest": "rootvm"}, deny),
            ("restore into another's guest", "wps-restore-start",
             {"guest": "rootvm", "image": d + "/none.img"}, deny),
            ("transaction on another's guest", "transaction",
             {"guest": "rootvm", "actions": [{"type": "memory-snapshot",
                                              "path": d + "/t.img"}]}, deny),
            ("disk-hook", "transaction",
             {"guest": "mine", "actions": [{"type": "disk-hook",
                                            "command": ["/bin/true"]}]},
             deny + ": actions[0]: disk-hook runs a command as root"),
            ("query-guests", "query-guests", None, None),
            ("query-snapshot of another's guest", "query-snapshot", {"guest": "rootvm"}, None),
        ]
        wpstest.nonroot_requests(S, tries)
        check("after the refusals: daemon alive, guest still registered, "
              "nothing written", p.poll() is None and wait_registered(root, "rootvm", 1)
              and not os.path.exists(d + "/stolen.img")
              and not os.path.exists(d + "/t.img"))
        r = root.cmd("wps-snapshot-start", {"guest": "rootvm", "path": d + "/ok.img"})
        check("root may still snapshot that guest", "return" in r, r)
        if "return" in r:
            snap_done(root, "rootvm")
        unprivileged_path_tests(S, d)
        guest.kill()
        guest.wait()
        root.close()
        p.terminate()
        p.wait(10)
    finally:
        subprocess.run(["rm", "-rf", d])


def main():
    S = T + "/wpsnapd.sock"
    d = start_daemon(S)
    st = os.stat(S)
    check("socket mode 0600", (st.st_mode & 0o777) == 0o600, oct(st.st_mode))
    r = subprocess.run([WPSNAPD, "--socket", S, "--foreground"], stderr=subprocess.PIPE,
                       text=True, timeout=10)
    check("second daemon on a live socket refused", r.returncode != 0
          and "answers" in r.stderr, r.stderr)
    for t in (protocol_tests, python_vmm_tests, guest_tests, vmm_triggered_tests,
              restore_tests):
        try:
            t(S)
        except Exception as e:
            ko(t.__name__, repr(e))
    c = Conn(S)
    r = c.cmd("quit")
    check("quit", r.get("return") == {}, r)
    try:
        d.wait(timeout=10)
        check("daemon exits on quit, socket removed", d.returncode == 0
              and not os.path.exists(S), d.returncode)
    except subprocess.TimeoutExpired:
        ko("daemon exits on quit")
    S2 = T + "/term.sock"
    d2 = start_daemon(S2)
    d2.send_signal(signal.SIGTERM)
    d2.wait(timeout=10)
    check("SIGTERM: clean exit, socket removed", d2.returncode == 0
          and not os.path.exists(S2), d2.returncode)
    try:
        kill_tests()
    except Exception as e:
        ko("kill_tests", repr(e))
    try:
        unprivileged_tests()
    except Exception as e:
        ko("unprivileged_tests", repr(e))
    # Under --enable-sanitizers a report goes to the daemon's stderr.
    bad = wpstest.sanitizer_reports(T)
    check("no sanitizer report from wpsnapd", not bad, bad)

wpstest.run_main(main, T)
