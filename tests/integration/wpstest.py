# Shared by the Python integration tests (daemon.py, transaction.py,
# daemon_attach.py): TAP-style results, a QMP client for wpsnapd, and the
# small things every daemon test needs. Imported from the test's own
# directory, so it works in and out of tree.
import ctypes, fcntl, json, mmap, os, signal, socket, subprocess, sys, time

B = os.environ.get("WPSNAP_BUILDDIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
WPSNAPD = os.path.join(B, "daemon", "wpsnapd")
GUEST = os.path.join(B, "tools", "wpsnap-guest")
WPSNAP = os.path.join(B, "tools", "wpsnap")
USERFAULTFD_IOC_NEW = 0xAA00
SNAPSHOT_END = ("WPS_SNAPSHOT_COMPLETED", "WPS_SNAPSHOT_FAILED", "WPS_SNAPSHOT_CANCELLED")

passed = failed = skipped = 0
procs = []   # every process a test starts: killed by finish()


def ok(name):
    global passed
    passed += 1
    print("ok - " + name, flush=True)


def ko(name, why=""):
    global failed
    failed += 1
    print("not ok - " + name + (": " + str(why) if why else ""), flush=True)


def skip(name, why):
    global skipped
    skipped += 1
    print("ok - %s # SKIP %s" % (name, why), flush=True)


def summary():
    """The last line the CI log shows; the exit status: 1 on any failure,
    77 (automake's SKIP) when everything that ran was skipped, so a run
    that tested nothing is never counted as a pass."""
    print("%d passed, %d failed%s" % (passed, failed,
                                      ", %d skipped" % skipped if skipped else ""))
    if failed:
        return 1
    return 77 if skipped and not passed else 0


def check(name, cond, why=""):
    (ok if cond else lambda n: ko(n, why))(name)
    return cond


class Conn:
    """One QMP session with wpsnapd; events that arrive while waiting for a
    reply are kept for event()."""

    def __init__(self, path, negotiate=True):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""
        self.events = []
        self.n = 0
        self.greeting = self.recv(5)
        if negotiate:
            r = self.cmd("qmp_capabilities")
            assert "return" in r, r

    def recv(self, timeout=10):
        end = time.time() + timeout
        while b"\n" not in self.buf:
            left = end - time.time()
            if left <= 0:
                raise TimeoutError("no message from wpsnapd")
            self.s.settimeout(left)
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("wpsnapd closed the connection")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def send_raw(self, data, fds=()):
        if fds:
            socket.send_fds(self.s, [data], list(fds))
        else:
            self.s.sendall(data)

    def send(self, execute, args=None, fds=()):
        self.n += 1
        req = {"execute": execute, "id": self.n}
        if args is not None:
            req["arguments"] = args
        self.send_raw((json.dumps(req) + "\n").encode(), fds)
        return self.n

    def reply(self, timeout=10):
        while True:
            m = self.recv(timeout)
            if "event" in m:
                self.events.append(m)
                continue
            return m

    def cmd(self, execute, args=None, fds=(), timeout=20):
        n = self.send(execute, args, fds)
        r = self.reply(timeout)
        assert r.get("id") == n, (r, n)
        return r

    def event(self, name, pred=lambda d: True, timeout=20):
        """The first event called name (WPS_SNAPSHOT_*: any end of a
        snapshot) whose data satisfies pred."""
        end = time.time() + timeout
        while True:
            for i, e in enumerate(self.events):
                if (e["event"] == name or (name == "WPS_SNAPSHOT_*" and
                                           e["event"] in SNAPSHOT_END)) \
                        and pred(e["data"]):
                    return self.events.pop(i)
            m = self.recv(max(0.01, end - time.time()))
            if "event" in m:
                self.events.append(m)

    def close(self):
        self.s.close()


def err_class(r):
    return r.get("error", {}).get("class")


def err(r):
    return r.get("error", {}).get("desc", "")


def new_uffd(dev=None):
    """A fresh userfaultfd of this process. dev: an open /dev/userfaultfd
    (a process that may not open the device itself inherits one: the
    uffd belongs to whoever issues the ioctl)."""
    if dev is not None:
        return fcntl.ioctl(dev, USERFAULTFD_IOC_NEW, os.O_CLOEXEC)
    dev = os.open("/dev/userfaultfd", os.O_RDWR | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(dev, USERFAULTFD_IOC_NEW, os.O_CLOEXEC)
    finally:
        os.close(dev)


def memfd_ram(name, size, byte=lambda page: 1):
    """Guest RAM as a VMM has it: a memfd of size bytes mapped shared,
    every page touched (its first byte = byte(page index)). Returns
    (memfd, mapping, host address)."""
    mfd = os.memfd_create(name)
    os.ftruncate(mfd, size)
    m = mmap.mmap(mfd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    for i in range(0, size, 4096):
        m[i] = byte(i // 4096)
    return mfd, m, addr


def tracer(pid):
    """The TracerPid of a process (0: nobody attached), None if gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def uffd_vmas(pid):
    """Mappings of pid still registered with a userfaultfd (VmFlags
    um/uw)."""
    n = 0
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if line.startswith("VmFlags:") and (" uw" in line or
                                                " um" in line):
                n += 1
    return n


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **kw)


def wait_for(pred, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def vmm_guest(sock, name, *extra, size="128M", duration=600):
    """wpsnap-guest --daemon: registers memfd RAM under name and serves
    pause requests until stop_guest() (or duration seconds, a backstop).
    Tests end it when they are done with it: how long their work takes
    depends on the machine's load, a fixed duration would not."""
    p = subprocess.Popen([GUEST, "--daemon", sock, "--name", name, "--backing", "memfd",
                          "--size", size, "--warmup", "0.2", "--duration", str(duration)]
                         + list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    procs.append(p)
    return p


def stop_guest(p, timeout=120):
    """End a vmm_guest's serving (SIGUSR1); its exit status and output."""
    p.send_signal(signal.SIGUSR1)
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


def uffd_ready(c, name, timeout=60):
    """Wait until guest name is registered with a fresh userfaultfd."""
    return wait_for(lambda: any(g["guest"] == name and g["uffd-ready"]
                                for g in c.cmd("query-guests")["return"]), timeout)


def nonroot_requests(S, tries, timeout=60):
    """Send requests (name, command, args, want) to wpsnapd at S on one
    connection as uid and gid 65534 (nogroup: the daemon runs with --group
    nogroup; setpriv must be there) and check each reply: want None, a
    return; a string, a GenericError whose desc holds it. {name: reply}."""
    client = (
        "import json, sys; sys.path.insert(0, %r)\n"
        "from wpstest import Conn\n"
        "c = Conn(%r)\n"
        "for name, cmd, args in json.loads(sys.argv[1]):\n"
        "    print(json.dumps([name, c.cmd(cmd, args)]), flush=True)\n"
        % (os.path.dirname(os.path.abspath(__file__)), S))
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                        "--clear-groups", "--inh-caps=-all",
                        sys.executable, "-c", client,
                        json.dumps([t[:3] for t in tries])],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    got = {}
    for line in r.stdout.splitlines():
        try:
            name, rep = json.loads(line)
            got[name] = rep
        except ValueError:
            pass
    check("non-root client in the group: connected, every request answered",
          len(got) == len(tries), r.stdout)
    for name, _, _, want in tries:
        rep = got.get(name, {})
        if want is None:
            check("non-root client may run %s" % name, "return" in rep, rep)
        else:
            check("non-root client may not %s: GenericError naming why" % name,
                  err_class(rep) == "GenericError" and want in err(rep), rep)
    return got


def start_daemon(sock, *extra, env=None):
    """wpsnapd on sock, its output (and what its children print: a
    watchdog's virsh) in sock.log; env: more environment variables."""
    log = open(sock + ".log", "w")
    p = subprocess.Popen([WPSNAPD, "--socket", sock, "--foreground"] + list(extra),
                         stdout=log, stderr=log,
                         env=dict(os.environ, **(env or {})))
    procs.append(p)
    if not wait_for(lambda: os.path.exists(sock), 5):
        raise RuntimeError("wpsnapd did not create " + sock)
    return p


def sanitizer_reports(d):
    """Logs in d in which a sanitizer reported something."""
    return [f for f in os.listdir(d) if f.endswith(".log") and
            any(w in open(os.path.join(d, f)).read()
                for w in ("AddressSanitizer", "LeakSanitizer", "runtime error"))]


def finish(d):
    """Kill what is left, show the logs of d on failure; the exit status."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    if failed:
        for f in sorted(os.listdir(d)):
            if f.endswith(".log"):
                print("# %s:\n#   " % f + open(os.path.join(d, f)).read().replace("\n", "\n#   "))
    return summary()


def run_main(main, d):
    """Run a test's main(), count an exception as a failure, clean up d,
    exit with the status."""
    try:
        main()
    except Exception as e:
        ko("main", repr(e))
    finally:
        rc = finish(d)
        subprocess.run(["rm", "-rf", d])
    sys.exit(rc)
