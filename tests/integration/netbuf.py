#!/usr/bin/env python3
# netbuf (network output commit) end to end. Two network namespaces joined
# by a veth pair that this test creates (10.88.0.1 guest, 10.88.0.2 peer;
# nothing is ever sent outside them). A sender in the guest namespace
# sends numbered UDP datagrams (and a TCP stream), a receiver in the peer
# namespace records what arrives and when, and wpsnap-netbuf holds the
# guest's output through timed checkpoint epochs, logging every epoch
# boundary and commit. The checks, for every datagram or record:
#   - it arrived only after the commit of the first epoch it can belong
#     to (the first whose boundary ended after the send began);
#   - in order, and none lost once everything was committed;
# and after a SIGKILL of the holder mid-epoch: nothing from the
# uncommitted epoch ever arrived, the kernel queue is gone, output stays
# dropped (the rule fails closed) until `wpsnap-netbuf cleanup`.
# A negative control runs the same check against a driver that holds
# nothing: the check must report early arrivals, or it proves nothing.
# Durable means remote (docs/REMOTE.md): a second veth pair joins the
# guest namespace to the peer's, where an NBD server (nbdkit, file
# plugin) holds the checkpoint chain; wpsnap checkpoint runs in the guest
# namespace and releases an epoch only once its checkpoint is on that
# export (flushed and entered in the table, acknowledged): with the
# server stopped (SIGSTOP) for a second, nothing sent after the stop
# arrives before it answers again. Fail over: the storage link cut, then
# wpsnap and the sender SIGKILLed (host A dies mid-checkpoint); on the
# peer side (host B) the export's last durable checkpoint is restored
# lazily, equal to its ledger, and no datagram that arrived belongs to an
# epoch after that checkpoint's.
# The sender and receiver are this file run with --role (separate
# processes, so the holder can be killed alone).
# Prints "N passed, N failed"; exit 1 on failure, 77 when it cannot run.
import os, re, signal, socket, struct, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wpstest  # noqa: E402
from wpstest import check, ko, ok, skip  # noqa: E402

CLOCK = time.CLOCK_MONOTONIC  # the driver logs CLOCK_MONOTONIC ns too


def now():
    return time.clock_gettime_ns(CLOCK)


# ---------------------------------------------------------------- roles

def role_main(argv):
    role, log = argv[0], argv[1]
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    lines = []
    try:
        if role == "udp-send":
            rate, seconds = float(argv[2]), float(argv[3])
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            # a held datagram stays charged to this socket: room for
            # several epochs, or the sender blocks and its times lie
            s.setsockopt(socket.SOL_SOCKET, 32, 16 << 20)  # SO_SNDBUFFORCE
            s.connect(("10.88.0.2", 47001))
            t_start = now()
            seq = 0
            while not stop and (seconds <= 0 or now() - t_start < seconds * 1e9):
                due = t_start + int(seq * 1e9 / rate)
                d = due - now()
                if d > 0:
                    time.sleep(d / 1e9)
                s0 = now()
                s.send(struct.pack("<Q", seq) + b"x" * 56)
                s1 = now()
                lines.append("%d %d %d" % (seq, s0, s1))
                seq += 1
        elif role == "udp-recv":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
            s.bind(("10.88.0.2", 47001))
            s.settimeout(0.05)
            open(log + ".ready", "w").close()
            while not stop:
                try:
                    d = s.recv(2048)
                except socket.timeout:
                    continue
                lines.append("%d %d" % (struct.unpack("<Q", d[:8])[0], now()))
        elif role == "tcp-send":
            rate, seconds = float(argv[2]), float(argv[3])
            s = socket.create_connection(("10.88.0.2", 47002), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t_start = now()
            seq = 0
            while not stop and now() - t_start < seconds * 1e9:
                due = t_start + int(seq * 1e9 / rate)
                d = due - now()
                if d > 0:
                    time.sleep(d / 1e9)
                s0 = now()
                s.sendall(struct.pack("<QQ", seq, 0x6e6574627566))
                lines.append("%d %d %d" % (seq, s0, now()))
                seq += 1
            s.shutdown(socket.SHUT_WR)
            s.settimeout(30)
            s.recv(1)  # wait for the receiver to close: everything arrived
        elif role == "tcp-recv":
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("10.88.0.2", 47002))
            ls.listen(1)
            open(log + ".ready", "w").close()
            c, _ = ls.accept()
            buf = b""
            while not stop:
                d = c.recv(65536)
                t = now()
                if not d:
                    break
                buf += d
                while len(buf) >= 16:
                    seq, magic = struct.unpack("<QQ", buf[:16])
                    buf = buf[16:]
                    lines.append("%d %d %d" % (seq, t, magic))
            c.close()
    finally:
        with open(log, "w") as f:
            f.write("\n".join(lines) + ("\n" if lines else ""))
    return 0


if len(sys.argv) > 1 and sys.argv[1] == "--role":
    sys.exit(role_main(sys.argv[2:]))

# ---------------------------------------------------------------- harness

B = os.environ.get("WPSNAP_BUILDDIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
NB = os.path.join(B, "tools", "wpsnap-netbuf")
WPSNAP = os.path.join(B, "tools", "wpsnap")
ME = os.path.abspath(__file__)
TAG = "%d" % (os.getpid() % 100000)
G, P = "wpsnb-g" + TAG, "wpsnb-p" + TAG          # namespaces
VG, VP = "nbg" + TAG, "nbp" + TAG                # veth ends
SG, SP = "nsg" + TAG, "nsp" + TAG                # storage link, G to P
NBD_URI = "nbd://10.89.0.2:10809/"               # the export, on P's side
T = None
procs = []


def sh(*args, ns=None, check_rc=True):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check_rc and r.returncode:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stdout.strip()))
    return r.stdout


def cleanup():
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    procs.clear()
    for ns in (G, P):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    if T:
        subprocess.run(["rm", "-rf", T])


def on_signal(sig, frame):
    cleanup()
    sys.exit(1)


def setup():
    sh("ip", "netns", "add", G)
    sh("ip", "netns", "add", P)
    sh("ip", "link", "add", VG, "netns", G, "type", "veth", "peer", "name", VP, "netns", P)
    sh("ip", "-n", G, "addr", "add", "10.88.0.1/24", "dev", VG)
    sh("ip", "-n", P, "addr", "add", "10.88.0.2/24", "dev", VP)
    # the storage link: never held (netbuf holds VG only)
    sh("ip", "link", "add", SG, "netns", G, "type", "veth", "peer", "name", SP, "netns", P)
    sh("ip", "-n", G, "addr", "add", "10.89.0.1/24", "dev", SG)
    sh("ip", "-n", P, "addr", "add", "10.89.0.2/24", "dev", SP)
    for ns, dev in ((G, VG), (P, VP), (G, SG), (P, SP), (G, "lo"), (P, "lo")):
        sh("ip", "-n", ns, "link", "set", dev, "up")


def spawn(cmd, out, ns=None):
    full = (["ip", "netns", "exec", ns] if ns else []) + cmd
    p = subprocess.Popen(full, stdout=open(out, "w"), stderr=subprocess.STDOUT)
    procs.append(p)
    return p


def role(ns, name, *args):
    log = os.path.join(T, name)
    return spawn([sys.executable, ME, "--role", name.split(".")[0], log] + [str(a) for a in args],
                 log + ".out", ns), log


def wait_file(path, timeout=10, pattern=None):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            if pattern is None:
                return True
            with open(path) as f:
                m = re.search(pattern, f.read(), re.M)
            if m:
                return m
        time.sleep(0.02)
    return False


def stop(p, sig=signal.SIGTERM, timeout=20):
    if p.poll() is None:
        p.send_signal(sig)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def holder(name, *args, backend="nfqueue", ifname=None, ns=None):
    out = os.path.join(T, name + ".driver")
    p = spawn([NB, "hold", "--if", ifname or VG, "--netns", ns or G, "--backend", backend,
               "--queue", "7", "-v"] + [str(a) for a in args], out)
    m = wait_file(out, 10, r"^ready (\w+)")
    return p, out, (m.group(1) if m else None)


def parse_driver(path):
    epochs, commits = {}, []
    with open(path) as f:
        for line in f:
            w = line.split()
            if len(w) == 4 and w[0] == "epoch":
                epochs[int(w[1])] = (int(w[2]), int(w[3]))
            elif len(w) == 4 and w[0] == "commit":
                commits.append((int(w[1]), int(w[2]), int(w[3])))
    return epochs, commits


def parse(path, n):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) >= n:
                    rows.append([int(x) for x in w[:n]])
    return rows


def release_time(epochs, commits, s0):
    """(first epoch the data sent at s0 can belong to, start time of the
    first commit covering it), None for what no closed epoch covers."""
    e_min = next((e for e in sorted(epochs) if epochs[e][1] > s0), None)
    if e_min is None:
        return None, None
    c = next((c for c in commits if c[0] >= e_min), None)
    return e_min, (c[1] if c else None)


def check_run(name, sent, got, epochs, commits, expect_early=False):
    """sent: [seq, s0, s1]; got: [seq, t] in arrival order."""
    s0 = {r[0]: r[1] for r in sent}
    early, uncommitted = [], []
    for seq, t in got:
        e, rel = release_time(epochs, commits, s0.get(seq, 0))
        if rel is None:
            uncommitted.append(seq)
        elif t < rel:
            early.append((seq, e, (rel - t) / 1e3))
    if expect_early:
        return check(name + ": the check sees early arrivals without a holder",
                     len(early) > len(got) // 2, "%d of %d early" % (len(early), len(got)))
    check(name + ": nothing arrived before its epoch's commit", not early and not uncommitted,
          "%d early (first: seq %s epoch %s, %.0f us early), %d with no commit" %
          (len(early), *(early[0] if early else (None, None, 0)), len(uncommitted)))
    seqs = [g[0] for g in got]
    check(name + ": arrival order is send order", seqs == sorted(seqs),
          next(("seq %d after %d" % (b, a) for a, b in zip(seqs, seqs[1:]) if b < a), ""))
    missing = sorted(set(s0) - set(seqs))
    check(name + ": nothing lost (%d sent)" % len(sent), len(sent) > 50 and not missing,
          "%d missing, first %s" % (len(missing), missing[:5]))
    # How many epochs a run spans depends on the machine's speed; that
    # at least one commit released what arrived does not.
    check(name + ": packets were held and released (%d epochs)" % len(commits),
          len(commits) >= 1, "no commit")


def udp_case(name, epoch_ms, ckpt_ms, rate=1000, seconds=2.0, backend="nfqueue", raw=False,
             ingress=False):
    extra = ["--epoch-ms", epoch_ms, "--checkpoint-ms", ckpt_ms] + (["--raw"] if raw else [])
    if ingress:
        extra.append("--ingress")
    rp, rlog = role(P, "udp-recv." + name)
    if not wait_file(rlog + ".ready"):
        return ko(name + ": receiver did not start")
    hp, hout, be = holder(name, *extra, backend=backend,
                          ifname=VP if ingress else VG, ns=P if ingress else G)
    if not check(name + ": holder ready (%s)" % be, be is not None,
                 open(hout).read().strip()):
        return
    sp, slog = role(G, "udp-send." + name, rate, seconds)
    sp.wait(seconds + 20)
    sent = parse(slog, 3)
    # every epoch still open gets closed and committed by the timer
    time.sleep((2 * epoch_ms + ckpt_ms) / 1000 + 0.3)
    hrc = stop(hp)
    stop(rp)
    got = parse(rlog, 2)
    epochs, commits = parse_driver(hout)
    if not raw:
        check(name + ": holder exited cleanly", hrc == 0, open(hout).read()[-600:])
    check_run(name, sent, got, epochs, commits, expect_early=raw)
    if be == "plug":
        qd = sh("tc", "qdisc", "show", "dev", VG, ns=G)
        check(name + ": plug qdisc removed on exit", "plug" not in qd, qd)
    elif not raw:
        rules = sh("iptables", "-t", "mangle", "-S", ns=P if ingress else G)
        check(name + ": rule removed on exit", "wpsnap-netbuf" not in rules, rules)


def end_series(name, hp, out, rp, rlog, slog):
    """The sender is done: let the checkpoints go on until an epoch that
    closed after its last send is committed, stop the checkpointer
    (SIGTERM) and the receiver, and check the run. Returns what was
    sent, what arrived, the epochs and the commits."""
    sent = parse(slog, 3)
    last = max((x[2] for x in sent), default=0)

    def covered():
        ep, cm = parse_driver(out)
        e = next((e for e in sorted(ep) if ep[e][0] > last), None)
        return e is not None and any(c[0] >= e for c in cm)
    end = time.time() + 60
    while time.time() < end and not covered():
        time.sleep(0.05)
    hrc = stop(hp)
    stop(rp)
    got = parse(rlog, 2)
    epochs, commits = parse_driver(out)
    check(name + ": checkpointer exited cleanly after SIGTERM", hrc == 0, open(out).read()[-600:])
    check_run(name, sent, got, epochs, commits)
    return sent, got, epochs, commits


def ckpt_case(name):
    """Epochs driven by real checkpoints of the reference guest: wpsnap
    checkpoint closes an epoch at each checkpoint's instant and commits it
    once that image is durable."""
    rp, rlog = role(P, "udp-recv." + name)
    if not wait_file(rlog + ".ready"):
        return ko(name + ": receiver did not start")
    out = os.path.join(T, name + ".driver")
    hp = spawn([WPSNAP, "checkpoint", "--dir", os.path.join(T, "ckpt"), "--count", "0",
                "--interval", "30", "--size", "32M", "--rate", "20", "--pattern", "hot",
                "--netbuf", VG, "--netns", G, "--queue", "7"], out)
    m = wait_file(out, 10, r"^ready (\w+)")
    if not check(name + ": checkpointer ready (%s)" % (m and m.group(1)), m,
                 open(out).read().strip()):
        return
    sp, slog = role(G, "udp-send." + name, 1000, 2.0)
    sp.wait(22)
    sent, got, epochs, commits = end_series(name, hp, out, rp, rlog, slog)
    imgs = [f for f in os.listdir(os.path.join(T, "ckpt")) if f.endswith(".wpsnap")]
    check(name + ": one image per committed epoch (%d images, %d commits)" %
          (len(imgs), len(commits)), len(imgs) == len(commits) and len(imgs) >= 3)
    rules = sh("iptables", "-t", "mangle", "-S", ns=G)
    check(name + ": rule removed on exit", "wpsnap-netbuf" not in rules, rules)


def nbd_server(name):
    """nbdkit in the peer namespace (host B), a sparse file export
    (flush = fdatasync), reachable from G over the storage link."""
    path = os.path.join(T, name.replace(" ", "-") + ".export")
    with open(path, "wb") as f:
        f.truncate(4 << 30)
    sp = spawn(["nbdkit", "-f", "-i", "10.89.0.2", "file", path],
               os.path.join(T, name + ".nbdkit"), P)
    end = time.time() + 10
    while time.time() < end and sp.poll() is None:
        r = subprocess.run(["ip", "netns", "exec", G, WPSNAP, "inspect", NBD_URI],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if "cannot connect" not in r.stdout:
            return sp
        time.sleep(0.1)
    ko(name + ": nbdkit did not start", open(os.path.join(T, name + ".nbdkit")).read())
    return None


def remote_series(name, ledgers):
    """wpsnap checkpoint in the guest namespace (host A), its chain on the
    export across the storage link, the guest's output held on VG."""
    out = os.path.join(T, name + ".driver")
    hp = spawn([WPSNAP, "checkpoint", "--dir", NBD_URI, "--count", "0",
                "--interval", "30", "--size", "32M", "--rate", "20", "--pattern", "hot",
                "--threads", "2", "--ledger-dir", ledgers,
                "--netbuf", VG, "--queue", "7"], out, G)
    m = wait_file(out, 10, r"^ready (\w+)")
    check(name + ": checkpointer ready (%s)" % (m and m.group(1)), m, open(out).read().strip())
    return (hp, out) if m else (None, out)


def remote_case(name):
    """Durable means remote: an epoch is released only once its checkpoint
    is on the export. The server is stopped for a second mid-series: no
    datagram sent after the stop may arrive before the server answers
    again (its epoch's checkpoint cannot be durable before)."""
    srv = nbd_server(name)
    if not srv:
        return
    rp, rlog = role(P, "udp-recv." + name)
    if not wait_file(rlog + ".ready"):
        return ko(name + ": receiver did not start")
    hp, out = remote_series(name, os.path.join(T, name.replace(" ", "-") + ".ledgers"))
    if not hp:
        return
    sp, slog = role(G, "udp-send." + name, 1000, 3.0)
    wait_file(out, 20, r"^commit 3 ")
    # Stop it while a take is between its pause and its commit: the CLI
    # writes checkpoint N's ledger there (before_commit), after the
    # epoch closed and before the writer's commit, whose flushes need the
    # server. So the first ledger not yet written, as soon as it exists,
    # is the moment (a busy wait: the commit is a flush round trip away).
    ldir = os.path.join(T, name.replace(" ", "-") + ".ledgers")
    seq = max([int(f[5:11]) for f in os.listdir(ldir) if f.startswith("ckpt-")] or [0]) + 1
    target = os.path.join(ldir, "ckpt-%06d.ledger" % seq)
    end = time.time() + 20
    while not os.path.exists(target) and time.time() < end:
        pass
    srv.send_signal(signal.SIGSTOP)
    t_stop = now()
    check(name + ": caught checkpoint #%d between its pause and its commit" % seq,
          os.path.exists(target))
    time.sleep(1.0)
    t_cont = now()
    srv.send_signal(signal.SIGCONT)
    sp.wait(30)
    sent, got, epochs, commits = end_series(name, hp, out, rp, rlog, slog)
    s0 = {r[0]: r[1] for r in sent}
    during = [r[0] for r in sent if t_stop < r[1] < t_cont]
    early = [(seq, t) for seq, t in got if s0.get(seq, 0) > t_stop and t < t_cont]
    check(name + ": %d datagrams sent while the server was stopped" % len(during),
          len(during) > 100, "too few to prove anything")
    check(name + ": none sent after the stop arrived before the server answered again",
          not early, "%d early, first seq %s" % (len(early), early[:1]))
    # an epoch whose boundary began after the stop belongs to a take that
    # needs the server (its image, its table entry): released after it
    # answered, never before (a take under way at the stop may be stuck
    # in its connect, before its pause: then that is the first such one)
    held = next((c for c in commits if c[1] > t_stop), None)
    check(name + ": the epoch of the checkpoint under way, closed before the server "
          "answered again, was released only after it did",
          held and epochs[held[0]][1] < t_cont < held[1],
          "stop %d, cont %d, commit %s, epoch %s" %
          (t_stop, t_cont, held, held and epochs.get(held[0])))
    after = [c for c in commits if epochs.get(c[0], (0, 0))[0] > t_stop]
    check(name + ": every epoch closed after the stop was released after the server answered "
          "(%d)" % len(after), after and all(c[1] > t_cont for c in after),
          "stop %d, cont %d, commits %s" % (t_stop, t_cont, after[:3]))
    r = subprocess.run(["ip", "netns", "exec", P, WPSNAP, "inspect", NBD_URI],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    n = len([l for l in r.stdout.splitlines() if l.startswith("chain ")])
    check(name + ": the export's chain holds every committed checkpoint (%d, %d commits)" %
          (n, len(commits)), n == len(commits) >= 3, r.stdout[-600:])
    stop(srv)


def failover_case(name):
    """Host A (namespace G) runs the reference guest, checkpointing every
    30 ms to host B's export (namespace P) with its output held. A dies
    mid-checkpoint: the storage link is cut (the take under way can no
    longer become durable), then wpsnap and the sender are SIGKILLed. On
    B the export's last durable checkpoint is restored lazily; it equals
    its ledger, and no datagram that reached B belongs to a later epoch
    than that checkpoint's."""
    srv = nbd_server(name)
    if not srv:
        return
    L = os.path.join(T, "failover.ledgers")
    rp, rlog = role(P, "udp-recv." + name)
    if not wait_file(rlog + ".ready"):
        return ko(name + ": receiver did not start")
    hp, out = remote_series(name, L)
    if not hp:
        return
    sp, slog = role(G, "udp-send." + name, 1000, 0)
    wait_file(out, 20, r"^commit 5 ")
    sh("ip", "-n", G, "link", "set", SG, "down")   # A loses B
    time.sleep(1.0)                                  # a take is stuck on it
    hp.kill()
    sp.kill()
    hp.wait()
    sp.wait()
    time.sleep(0.3)
    stop(rp)
    subprocess.run([NB, "cleanup", "--if", VG, "--netns", G, "--queue", "7"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    epochs, commits = parse_driver(out)
    sent, got = parse(slog, 3), parse(rlog, 2)
    # on B: the last durable checkpoint, as the export's table says
    r = subprocess.run(["ip", "netns", "exec", P, WPSNAP, "inspect", NBD_URI],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seq = len([l for l in r.stdout.splitlines() if l.startswith("chain ")]) - 1
    check(name + ": B's export names a last durable checkpoint (#%d)" % seq, seq >= 4,
          r.stdout[-600:])
    check(name + ": it is the last one A reported (#%d)" % (len(commits) - 1),
          seq == len(commits) - 1, "A printed %d commits" % len(commits))
    ledger = os.path.join(L, "ckpt-%06d.ledger" % seq)
    r = subprocess.run(["ip", "netns", "exec", P, WPSNAP, "restore", NBD_URI, "--lazy",
                        "--writers", "2", "--ledger", ledger],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check(name + ": on B, restore --lazy of the export resumes the guest, equal to "
          "checkpoint #%d's ledger" % seq,
          r.returncode == 0 and "verified: every block as in" in r.stdout, r.stdout[-800:])
    # checkpoint seq closed epoch seq + 1; a datagram belongs to a later
    # epoch if it was sent after that epoch's boundary ended
    e = seq + 1
    if not check(name + ": A reported epoch %d with checkpoint #%d" % (e, seq), e in epochs,
                 "epochs %s" % sorted(epochs)[-3:]):
        return stop(srv)
    s0 = {r[0]: r[1] for r in sent}
    later = [g[0] for g in got if s0.get(g[0], 0) >= epochs[e][1]]
    check(name + ": no datagram that left A belongs to an epoch after #%d's (%d arrived)" %
          (seq, len(got)), got and not later, "%d later, first seq %s" % (len(later), later[:3]))
    lost = [r[0] for r in sent if r[2] < epochs[e][0] and r[0] not in {g[0] for g in got}]
    check(name + ": every datagram of the committed epochs arrived", not lost,
          "%d lost, first %s" % (len(lost), lost[:3]))
    stop(srv)


def daemon_case(name):
    """Epochs driven by wpsnapd's checkpoint series of a VMM's guest
    (wps-checkpoint-start with "netbuf"): each WPS_CHECKPOINT event says
    when its epoch closed and when it was released."""
    S = os.path.join(T, "wpsnapd.sock")
    dp = spawn([os.path.join(B, "daemon", "wpsnapd"), "--socket", S, "--foreground"],
               os.path.join(T, "wpsnapd.log"))
    if not wait_file(S):
        return ko(name + ": wpsnapd did not start")
    c = wpstest.Conn(S)
    gp = spawn([os.path.join(B, "tools", "wpsnap-guest"), "--daemon", S, "--name", "g",
                "--backing", "memfd", "--size", "32M", "--pattern", "hot", "--rate", "20",
                "--warmup", "0", "--duration", "30"], os.path.join(T, "guest.out"))
    if not wait_file(os.path.join(T, "guest.out"), 10, r"^registered"):
        return ko(name + ": guest did not register")
    rp, rlog = role(P, "udp-recv." + name)
    if not wait_file(rlog + ".ready"):
        return ko(name + ": receiver did not start")
    os.mkdir(os.path.join(T, "dckpt"))
    r = c.cmd("wps-checkpoint-start", {"guest": "g", "dir": os.path.join(T, "dckpt"),
                                        "interval-ms": 30,
                                        "netbuf": {"ifname": VG, "netns": G, "queue": 7}})
    if not check(name + ": wps-checkpoint-start with netbuf", "return" in r, r):
        return
    r = c.cmd("wps-checkpoint-start", {"guest": "g", "dir": T, "netbuf": {"ifname": VG,
                                        "netns": G, "frobs": 1}})
    check(name + ": a bad netbuf object is refused", "error" in r, r)
    sp, slog = role(G, "udp-send." + name, 1000, 2.0)
    sp.wait(22)
    sent = parse(slog, 3)
    # checkpoints go on until one whose epoch closed after the last send
    # is committed (its WPS_CHECKPOINT event says so)
    last = max((x[2] for x in sent), default=0)
    end = time.time() + 60
    while time.time() < end and not any(
            e["event"] == "WPS_CHECKPOINT" and e["data"]["epoch-t0-ns"] > last
            for e in c.events):
        try:
            m = c.recv(1)
        except TimeoutError:
            continue
        if "event" in m:
            c.events.append(m)
    c.cmd("wps-checkpoint-stop", {"guest": "g"})
    c.event("WPS_CHECKPOINT_STOPPED", lambda d: d["guest"] == "g", 30)
    stop(rp)
    got = parse(rlog, 2)
    evs = [e["data"] for e in c.events if e["event"] == "WPS_CHECKPOINT"]
    epochs = {d["epoch"]: (d["epoch-t0-ns"], d["epoch-t1-ns"]) for d in evs}
    commits = [(d["epoch"], d["commit-t0-ns"], d["commit-t0-ns"]) for d in evs]
    check_run(name, sent, got, epochs, commits)
    rules = sh("iptables", "-t", "mangle", "-S", ns=G)
    check(name + ": rule removed when the series stopped", "wpsnap-netbuf" not in rules, rules)
    c.cmd("quit")
    stop(dp)
    stop(gp, signal.SIGKILL)


def tcp_case(name, epoch_ms, ckpt_ms):
    rp, rlog = role(P, "tcp-recv." + name)
    if not wait_file(rlog + ".ready"):
        return ko(name + ": receiver did not start")
    hp, hout, be = holder(name, "--epoch-ms", epoch_ms, "--checkpoint-ms", ckpt_ms)
    if not check(name + ": holder ready", be is not None, open(hout).read().strip()):
        return
    sp, slog = role(G, "tcp-send." + name, 500, 2.0)
    src = sp.wait(40)
    stop(rp)
    hrc = stop(hp)
    sent = parse(slog, 3)
    got = parse(rlog, 3)
    epochs, commits = parse_driver(hout)
    check(name + ": sender finished and saw the stream closed", src == 0, open(slog + ".out").read()[-400:])
    check(name + ": holder exited cleanly", hrc == 0, open(hout).read()[-600:])
    check(name + ": stream intact", all(g[2] == 0x6e6574627566 for g in got) and
          [g[0] for g in got] == list(range(len(got))), "bad record")
    check_run(name, sent, [g[:2] for g in got], epochs, commits)


def kill_case(name):
    rp, rlog = role(P, "udp-recv." + name)
    if not wait_file(rlog + ".ready"):
        return ko(name + ": receiver did not start")
    hp, hout, be = holder(name, "--epoch-ms", 200, "--checkpoint-ms", 40)
    if not check(name + ": holder ready", be is not None, open(hout).read().strip()):
        return
    sp, slog = role(G, "udp-send." + name, 1000, 0)
    # three commits, then 60 ms into the next epoch: no call in flight
    if not wait_file(hout, 10, r"^commit 3 "):
        return ko(name + ": no third commit", open(hout).read())
    time.sleep(0.06)
    hp.kill()
    hp.wait()
    t_kill = now()
    time.sleep(0.5)           # the sender keeps sending into the dead queue
    queues = sh("cat", "/proc/net/netfilter/nfnetlink_queue", ns=G)
    rules = sh("iptables", "-t", "mangle", "-S", ns=G)
    stop(sp)
    time.sleep(0.2)
    stop(rp)
    sent, got = parse(slog, 3), parse(rlog, 2)
    epochs, commits = parse_driver(hout)
    last = max(c[0] for c in commits)
    # normally epoch `last` is the last closed one; under load the next
    # may have closed too: the checks below hold either way
    check(name + ": killed mid-epoch (epoch %d closed, %d committed)" % (max(epochs), last),
          last >= 3, "epochs %s commits %s" % (max(epochs), last))
    t_closed = epochs[last][0]          # boundary of the last committed epoch began
    t_open = epochs[last][1]            # and ended
    after = [r for r in sent if r[1] > t_open]      # surely uncommitted
    before = [r for r in sent if r[2] < t_closed]   # surely committed
    got_seq = {g[0] for g in got}
    leaked = [r[0] for r in after if r[0] in got_seq]
    check(name + ": sent %d datagrams after the last commit's epoch (%d after the kill)" %
          (len(after), sum(1 for r in after if r[1] > t_kill)),
          len(after) > 100 and any(r[1] > t_kill for r in after), "too few to prove anything")
    check(name + ": none of them ever arrived", not leaked,
          "%d leaked, first %s" % (len(leaked), leaked[:5]))
    missing = [r[0] for r in before if r[0] not in got_seq]
    check(name + ": every committed datagram arrived (%d)" % len(before), before and not missing,
          "%d missing" % len(missing))
    check(name + ": the kernel destroyed queue 7",
          not any(l.split()[:1] == ["7"] for l in queues.splitlines()), queues)
    check(name + ": the rule stays and fails closed", "wpsnap-netbuf q7" in rules, rules)
    # cleanup removes it and output flows again
    r = subprocess.run([NB, "cleanup", "--if", VG, "--netns", G, "--queue", "7", "-v"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rules = sh("iptables", "-t", "mangle", "-S", ns=G)
    check(name + ": cleanup removed the rule", r.returncode == 0 and "wpsnap-netbuf" not in rules,
          r.stdout + rules)
    rp, rlog = role(P, "udp-recv." + name + "-after")
    wait_file(rlog + ".ready")
    sp, slog = role(G, "udp-send." + name + "-after", 200, 0.5)
    sp.wait(20)
    time.sleep(0.2)
    stop(rp)
    check(name + ": output flows after cleanup", len(parse(rlog, 2)) == len(parse(slog, 3)) > 0,
          "%d of %d" % (len(parse(rlog, 2)), len(parse(slog, 3))))


def busy_case(name):
    hp, hout, be = holder(name + "-1", "--epoch-ms", 50)
    if not check(name + ": first holder ready", be is not None, open(hout).read()):
        return
    r = subprocess.run([NB, "hold", "--if", VG, "--netns", G, "--backend", "nfqueue",
                        "--queue", "7", "--epochs", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
    check(name + ": a second holder of queue 7 is refused, by name", r.returncode != 0 and
          "already bound by another process" in r.stdout, r.stdout)
    stop(hp)
    r = subprocess.run([NB, "hold", "--if", "nosuchif0", "--netns", G, "--epochs", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
    check(name + ": a missing interface is named", r.returncode != 0 and "no interface nosuchif0" in r.stdout,
          r.stdout)


def plug_case(name):
    r = subprocess.run([NB, "hold", "--if", VG, "--netns", G, "--backend", "plug", "--epochs", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
    if r.returncode != 0 and "no sch_plug" in r.stdout:
        skip(name, "this kernel has no sch_plug qdisc (CONFIG_NET_SCH_PLUG); NFQUEUE is tested instead")
        r = subprocess.run([NB, "hold", "--if", VG, "--netns", G, "--epochs", "2", "-v"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
        check("auto: falls back to NFQUEUE and says why", r.returncode == 0 and
              "ready nfqueue" in r.stdout and "no sch_plug" in r.stdout, r.stdout)
        return
    check(name + ": plug qdisc created", r.returncode == 0 and "ready plug" in r.stdout, r.stdout)
    udp_case(name, 50, 20, backend="plug")
    r = subprocess.run([NB, "hold", "--if", VG, "--netns", G, "--epochs", "2", "-v"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
    check("auto: picks plug where the kernel has it", "ready plug" in r.stdout, r.stdout)


def main():
    global T
    if os.geteuid() != 0:
        print("ok - netbuf # SKIP needs root (network namespaces, iptables)")
        return 77
    for tool in ("ip", "iptables"):
        if subprocess.run(["sh", "-c", "command -v " + tool], stdout=subprocess.DEVNULL).returncode:
            print("ok - netbuf # SKIP %s not installed (Debian package %s)" %
                  (tool, "iproute2" if tool == "ip" else "iptables"))
            return 77
    T = subprocess.run(["mktemp", "-d", "/var/tmp/wpsnap-netbuf.XXXXXX"], stdout=subprocess.PIPE,
                       text=True, check=True).stdout.strip()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        setup()
        udp_case("udp", 50, 20)
        udp_case("udp pipelined", 20, 55)        # checkpoints outlast epochs
        tcp_case("tcp", 50, 20)
        udp_case("ingress", 50, 20, ingress=True)
        udp_case("no holder", 50, 20, raw=True)  # negative control
        ckpt_case("real checkpoints")
        if subprocess.run(["sh", "-c", "command -v nbdkit"], stdout=subprocess.DEVNULL).returncode:
            skip("remote checkpoints", "nbdkit not installed (contrib/install-deps.sh)")
        else:
            remote_case("remote checkpoints")
            failover_case("fail over")
        daemon_case("wpsnapd checkpoints")
        kill_case("kill")
        busy_case("busy")
        plug_case("plug")
    except Exception as e:
        import traceback
        traceback.print_exc()
        ko("netbuf test crashed", e)
    finally:
        cleanup()
    return wpstest.summary()


sys.exit(main())
