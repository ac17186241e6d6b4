#!/usr/bin/env python3
# A private libvirtd for the VM tests (tests/integration/vm_boot.py and the
# ones issue 14 adds after it), domain XML for the QEMU test guest
# (tools/qguest), and readers for the guest's disk sequence (the record
# layout is in tools/qguest/qguest.c and docs/VM.md).
#
# Invariants:
# - Nothing of the host's libvirt is used or touched. libvirtd's system
#   paths are compiled in (/run/libvirt, /var/lib/libvirt, /var/cache/
#   libvirt, /var/log/libvirt, /etc/libvirt) and there is no key or
#   variable for them, so libvirtd runs in a mount namespace of its own
#   (unshare -m, propagation private) where an overlay over /run, /var/lib,
#   /var/cache and /var/log lets those directories be created without
#   creating them on the host, and each is then a bind mount of a directory
#   under the test's temp dir; /etc/libvirt, /etc/passwd and /etc/group are
#   bind mounts of private copies (the QEMU driver resolves its compiled-in
#   user libvirt-qemu at start, even when qemu.conf says root, and only
#   libvirt-daemon-system would create it). The mounts exist only in that
#   namespace and vanish with its last process: the host's mount table never
#   sees them.
# - The client socket is in the temp dir, outside every overmounted path,
#   so clients outside the namespace use qemu:///system?socket=PATH.
#   QEMU's pid file, /run/libvirt/qemu/NAME.pid inside, is
#   Libvirtd.pidfile(NAME) outside.
# - Every process of the namespace is ours (QEMU inherits libvirtd's
#   namespace: qemu.conf namespaces = [ ]): stop() destroys the domains,
#   stops libvirtd and kills, by pid, whatever is still in the namespace.
#   SIGTERM to the test runs stop() (through SystemExit); if the test dies
#   outright, a watchdog process (this file, "watchdog" mode, in a session of
#   its own) sees its pipe close, kills what is in the namespace and removes
#   the temp dir. Both hold an fd of the namespace until they are done, so
#   its "mnt:[INODE]" cannot be reused by another namespace meanwhile
#   (killing by a recycled identity once hit another test's processes).
# - Cannot run (not root, no libvirtd, no overlayfs, libvirtd exits): the
#   caller gets Unavailable with the exact reason and exits 77.
import json, os, shutil, signal, struct, subprocess, sys, time

B = os.environ.get("WPSNAP_BUILDDIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GUEST = os.path.join(B, "tools", "qguest", "qguest.elf")
PROBE = os.path.join(B, "tests", "integration", "vm_probe")
MiB = 1 << 20

# tools/qguest/qguest.c: the disk sequence
SEQ_RAM_ADDR = 3 << 20
SEQ_RAM_MAGIC = b"qgseqram"
SEQ_DISK_MAGIC = b"qgseqdsk"
SEQ_RING_LBA = 8
SEQ_RING_LEN = 64

LIBVIRTD_CONF = """\
unix_sock_dir = "{sock}"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:{log}"
# no dmidecode/udev needed for a UUID
host_uuid = "5d2f0e0c-8f4a-4f37-9c0b-7a1e2b3c4d5e"
"""

QEMU_CONF = """\
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
# QEMU's stdout/stderr to /var/log/libvirt/qemu/NAME.log directly: virtlogd
# would be one more daemon to start and stop
stdio_handler = "file"
dynamic_ownership = 0
remember_owner = 0
"""

# Runs inside the new mount namespace (sh -c SCRIPT T LIBVIRTD).
NS_SCRIPT = r"""
set -e
T=$1
for d in /run /var/lib /var/cache /var/log; do
    n=$(echo "$d" | tr / _)
    mkdir -p "$T/ov/$n/u" "$T/ov/$n/w"
    mount -t overlay overlay \
        -o "lowerdir=$d,upperdir=$T/ov/$n/u,workdir=$T/ov/$n/w" "$d"
done
for p in run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt \
         log:/var/log/libvirt; do
    mkdir -p "${p#*:}"
    mount --bind "$T/${p%%:*}" "${p#*:}"
done
mount --bind "$T/etc" /etc/libvirt
mount --bind "$T/passwd" /etc/passwd
mount --bind "$T/group" /etc/group
echo "namespace ready" >&2
exec "$2" --config "$T/etc/libvirtd.conf" --pid-file "$T/libvirtd.pid"
"""


class Unavailable(Exception):
    """libvirtd cannot run here; the message says why (exit 77)."""


def _which(name, pkg):
    p = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not p:
        raise Unavailable("%s not found (Debian package %s)" % (name, pkg))
    return p


def _mnt_ns(pid):
    try:
        return os.readlink("/proc/%d/ns/mnt" % pid)
    except OSError:
        return None


def ns_pids(ns):
    """The pids whose mount namespace is ns (never our own)."""
    out = []
    if not ns or ns == _mnt_ns(os.getpid()):
        return out
    for p in os.listdir("/proc"):
        if p.isdigit() and _mnt_ns(int(p)) == ns:
            out.append(int(p))
    return out


def kill_ns(ns, timeout=10):
    """SIGKILL every process of the namespace, by pid, until none is left;
    the pids that would not die."""
    end = time.time() + timeout
    while True:
        left = ns_pids(ns)
        if not left or time.time() > end:
            return left
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def alive(pid):
    """Whether pid is a live process (a zombie waiting for init is not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _watchdog(ns, tmp):
    """Block on stdin; "done" ends quietly, EOF without it (the test died)
    kills the namespace and removes the test's temp dir."""
    data = sys.stdin.buffer.read()
    if data.strip() != b"done":
        kill_ns(ns)
        shutil.rmtree(tmp, ignore_errors=True)


class Libvirtd:
    """A private libvirtd under tmp/lv (see the invariants above)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.root = os.path.join(tmp, "lv")
        self.sock = os.path.join(self.root, "sock", "libvirt-sock")
        self.uri = "qemu:///system?socket=" + self.sock
        self.log = os.path.join(self.root, "libvirtd.log")
        self.proc = self.watchdog = None
        self.ns = None
        self.ns_fd = None
        self.start_s = None

    def pidfile(self, name):
        return os.path.join(self.root, "run", "qemu", name + ".pid")

    def qemu_log(self, name):
        return os.path.join(self.root, "log", "qemu", name + ".log")

    def qemu_pid(self, name):
        with open(self.pidfile(name)) as f:
            return int(f.read().strip())

    def _prepare(self):
        if os.geteuid() != 0:
            raise Unavailable("needs root (libvirtd's QEMU driver, mounts)")
        self.libvirtd = _which("libvirtd", "libvirt-daemon")
        self.virsh_bin = _which("virsh", "libvirt-clients")
        self.unshare = _which("unshare", "util-linux")
        _which("qemu-system-x86_64", "qemu-system-x86")
        _which("qemu-img", "qemu-utils")
        if not os.path.exists("/usr/lib/x86_64-linux-gnu/libvirt/"
                              "connection-driver/libvirt_driver_qemu.so"):
            raise Unavailable("libvirtd has no QEMU driver (Debian package "
                              "libvirt-daemon-driver-qemu)")
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read().split():
                raise Unavailable("no overlayfs in this kernel (the private "
                                  "libvirtd's mount namespace needs it)")
        if not os.path.exists(GUEST):
            raise Unavailable("%s not built (make check builds it)" % GUEST)
        for d in ("etc", "run", "lib", "cache", "log", "sock", "ov"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        with open(os.path.join(self.root, "etc", "libvirtd.conf"), "w") as f:
            f.write(LIBVIRTD_CONF.format(sock=os.path.dirname(self.sock),
                                         log=self.log))
        with open(os.path.join(self.root, "etc", "qemu.conf"), "w") as f:
            f.write(QEMU_CONF)
        # the compiled-in QEMU user and group, only in the namespace
        for fn, line in (("passwd", "libvirt-qemu:x:64055:64055:libvirt "
                          "QEMU:/nonexistent:/usr/sbin/nologin\n"),
                         ("group", "libvirt-qemu:x:64055:\n")):
            with open("/etc/" + fn) as f:
                text = f.read()
            if not any(l.startswith("libvirt-qemu:")
                       for l in text.splitlines()):
                text += ("" if text.endswith("\n") else "\n") + line
            with open(os.path.join(self.root, fn), "w") as f:
                f.write(text)

    def start(self, timeout=90):
        """Start it and wait until a client gets an answer. Raises
        Unavailable with libvirtd's own words if it does not come up."""
        self._prepare()
        signal.signal(signal.SIGTERM, _sigterm)
        t0 = time.monotonic()
        own = _mnt_ns(os.getpid())
        self.out = open(os.path.join(self.root, "libvirtd.out"), "w")
        self.proc = subprocess.Popen(
            [self.unshare, "-m", "--propagation", "private", "sh", "-c",
             NS_SCRIPT, "sh", self.root, self.libvirtd],
            stdout=self.out, stderr=subprocess.STDOUT)
        end = time.time() + timeout
        while self.ns is None or self.ns == own:
            if self.proc.poll() is not None or time.time() > end:
                raise Unavailable(self._why("libvirtd's namespace failed"))
            self.ns = _mnt_ns(self.proc.pid)
            time.sleep(0.005)
        # Hold the namespace: while an fd refers to it, its identity
        # ("mnt:[INODE]") cannot be given to another namespace, so killing
        # "every process of ns" can never hit someone else's processes
        # (ip netns exec, unshare: new mount namespaces appear all the
        # time on a busy machine, and their inode numbers are reused).
        self.ns_fd = os.open("/proc/%d/ns/mnt" % self.proc.pid,
                             os.O_RDONLY | os.O_CLOEXEC)
        if os.readlink("/proc/self/fd/%d" % self.ns_fd) != self.ns:
            raise Unavailable("libvirtd's namespace changed under us")
        self.watchdog = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "watchdog", self.ns,
             self.tmp],
            stdin=subprocess.PIPE, start_new_session=True,
            pass_fds=(self.ns_fd,))
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(self._why("libvirtd exited with status %d"
                                            % self.proc.returncode))
            if time.time() > end:
                raise Unavailable(self._why("libvirtd gave no answer in %d s"
                                            % timeout))
            if os.path.exists(self.sock):
                r = self.virsh("version", check=False)
                if r.returncode == 0 and "Running hypervisor: QEMU" \
                        in r.stdout:
                    break
            time.sleep(0.05)
        self.start_s = time.monotonic() - t0
        return self

    def _why(self, what):
        msg = [what]
        for path in (os.path.join(self.root, "libvirtd.out"), self.log):
            try:
                with open(path) as f:
                    lines = [l.strip() for l in f if " error : " in l or
                             "mount" in l or "libvirtd" in l]
                msg += lines[-4:]
            except OSError:
                pass
        return "; ".join(msg)

    def virsh(self, *args, check=True, timeout=60):
        r = subprocess.run([self.virsh_bin, "-q", "-c", self.uri] +
                           list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        if check and r.returncode:
            raise RuntimeError("virsh %s: %s" % (" ".join(args),
                                                 r.stderr.strip()))
        return r

    def qmp(self, dom, execute, **args):
        """A QMP command through libvirt's monitor; its "return"."""
        cmd = {"execute": execute}
        if args:
            cmd["arguments"] = args
        r = json.loads(self.virsh("qemu-monitor-command", dom,
                                  json.dumps(cmd)).stdout)
        if "error" in r:
            raise RuntimeError("QMP %s: %s" % (execute, r["error"]))
        return r["return"]

    def hmp(self, dom, line):
        return self.virsh("qemu-monitor-command", dom, "--hmp", line).stdout

    def pmem(self, dom, addr, size, path):
        """Guest-physical bytes [addr, addr+size) via QMP pmemsave (QEMU
        writes path itself: it sees the temp dir, which is not
        overmounted)."""
        self.qmp(dom, "pmemsave", val=addr, size=size, filename=path)
        with open(path, "rb") as f:
            return f.read()

    def ram_seq(self, dom, tmp):
        """The guest's RAM record of its disk sequence (see seq_ram)."""
        return seq_ram(self.pmem(dom, SEQ_RAM_ADDR, 64,
                                 os.path.join(tmp, dom + ".seq")))

    def wait_done(self, dom, tmp, above, timeout=60):
        """The RAM record once the guest acknowledged a record past
        above (or the last one read, after timeout seconds)."""
        end = time.time() + timeout
        while True:
            r = self.ram_seq(dom, tmp)
            if (r and r["done"] > above) or time.time() > end:
                return r
            time.sleep(0.1)

    def stop(self):
        """Destroy every domain, stop libvirtd, kill what is left in its
        namespace. Returns the pids that survived (none, normally)."""
        if self.proc is None:
            return []
        if self.proc.poll() is None:
            try:
                r = self.virsh("list", "--all", "--name", check=False,
                               timeout=20)
                for d in r.stdout.split():
                    self.virsh("destroy", d, check=False, timeout=20)
                    self.virsh("undefine", d, check=False, timeout=20)
            except subprocess.TimeoutExpired:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        left = kill_ns(self.ns)
        if self.watchdog:
            try:
                self.watchdog.communicate(b"done", timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                self.watchdog.kill()
                self.watchdog.wait()
            self.watchdog = None
        self.out.close()
        self.proc = None
        if self.ns_fd is not None:
            os.close(self.ns_fd)
            self.ns_fd = None
        return left

    def finish(self, pids):
        """The end of a VM test: libvirtd's and QEMU's logs if a check
        failed, then stop() and check that nothing is left: no process of
        the namespace, none of pids (the tests' QEMUs), no mount."""
        import glob
        import wpstest
        if wpstest.failed:
            for f in [self.log] + sorted(glob.glob(os.path.join(
                    self.root, "log", "qemu", "*.log"))):
                try:
                    with open(f) as fh:
                        print("# %s:\n#   %s" % (f, fh.read()[-2000:].replace(
                            "\n", "\n#   ")), flush=True)
                except OSError:
                    pass
        left = self.stop()
        wpstest.check("libvirtd stopped, no process left in its namespace",
                      not left, left)
        alive_ = [p for p in pids if alive(p)]
        wpstest.check("no QEMU left", not alive_, alive_)
        wpstest.check("no mount left on the host", not self.host_mounts(),
                      self.host_mounts())

    def host_mounts(self):
        """Host mount table lines that name our temp dir (none: the mounts
        lived only in the namespace)."""
        with open("/proc/self/mountinfo") as f:
            return [l for l in f if self.root in l]


def _sigterm(signum, frame):
    # through SystemExit, so every finally (Libvirtd.stop) runs
    raise SystemExit(128 + signum)


def domain_xml(name, mem_mib, ram, disk=None, cmdline="", debugcon=None,
               kernel=GUEST, numa=False):
    """A TCG domain booting kernel (the multiboot qguest: libvirt's
    <os><kernel> is QEMU's -kernel, whose loader knows multiboot). ram:
    "shared" (memfd, share=on: what wpsnap needs for lazy restore) or
    "private" (plain anonymous). disk: a qcow2 as IDE primary master, where
    qguest writes its disk sequence. debugcon: a file for the guest's
    port-0xe9 lines (a <qemu:commandline>: taints the domain custom-argv).
    numa: two NUMA nodes of half the RAM each (two RAM blocks of one
    size; 2 vCPUs, the second never started by qguest)."""
    from xml.sax.saxutils import escape, quoteattr
    backing = ""
    if ram == "shared":
        backing = ("  <memoryBacking><source type='memfd'/>"
                   "<access mode='shared'/></memoryBacking>\n")
    elif ram != "private":
        raise ValueError("ram: shared or private")
    disk_xml = ""
    if disk:
        disk_xml = ("    <disk type='file' device='disk'>"
                    "<driver name='qemu' type='qcow2'/><source file=%s/>"
                    "<target dev='hda' bus='ide'/></disk>\n" % quoteattr(disk))
    extra = ""
    if debugcon:
        extra = ("  <qemu:commandline><qemu:arg value='-debugcon'/>"
                 "<qemu:arg value=%s/></qemu:commandline>\n" %
                 quoteattr("file:" + debugcon))
    return """<domain type='qemu' \
xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{vcpus}</vcpu>
{numa}{backing}  <os><type arch='x86_64' machine='pc'>hvm</type>\
<kernel>{kernel}</kernel><cmdline>{cmdline}</cmdline></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{qemu}</emulator>
{disk}    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
{extra}</domain>
""".format(name=escape(name), mem=mem_mib, backing=backing,
           vcpus=2 if numa else 1,
           numa=("  <cpu><numa><cell id='0' cpus='0' memory='%d' unit='MiB'/>"
                 "<cell id='1' cpus='1' memory='%d' unit='MiB'/></numa>"
                 "</cpu>\n" % (mem_mib // 2, mem_mib // 2)) if numa else "",
           kernel=escape(kernel), cmdline=escape(cmdline),
           qemu=shutil.which("qemu-system-x86_64"), disk=disk_xml,
           extra=extra)


def fnv1a(data):
    h = 0x811c9dc5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xffffffff
    return h


def seq_ram(data):
    """The RAM record (pmemsave of SEQ_RAM_ADDR, >= 32 bytes): dict, or
    None when the guest found no disk."""
    if data[:8] != SEQ_RAM_MAGIC:
        return None
    issued, done, lba, n, writes = struct.unpack_from("<IIIIQ", data, 8)
    return {"issued": issued, "done": done, "ring_lba": lba, "ring_len": n,
            "writes": writes}


def seq_disk(raw):
    """The ring of a raw disk image: (newest seq or 0, [errors]). A slot
    not yet written is all zero; anything else must be a whole record at
    its own LBA with a good checksum and fill."""
    errors, newest = [], 0
    with open(raw, "rb") as f:
        f.seek(SEQ_RING_LBA * 512)
        ring = f.read(SEQ_RING_LEN * 512)
    for i in range(SEQ_RING_LEN):
        s = ring[i * 512:(i + 1) * 512]
        lba = SEQ_RING_LBA + i
        if s == bytes(512):
            continue
        if s[:8] != SEQ_DISK_MAGIC:
            errors.append("LBA %d: bad magic %r" % (lba, s[:8]))
            continue
        seq, rlba = struct.unpack_from("<II", s, 8)
        words = struct.unpack_from("<121I", s, 24)
        if rlba != lba or seq % SEQ_RING_LEN != i:
            errors.append("LBA %d: record says LBA %d seq %d" % (lba, rlba,
                                                                 seq))
        elif struct.unpack_from("<I", s, 508)[0] != fnv1a(s[:508]):
            errors.append("LBA %d: checksum" % lba)
        elif any(w != seq ^ ((k * 0x9e3779b1) & 0xffffffff)
                 for k, w in enumerate(words)):
            errors.append("LBA %d: fill" % lba)
        else:
            newest = max(newest, seq)
    return newest, errors


def disk_newest(qcow2, tmp):
    """The newest disk-sequence record of a qcow2 (with its backing chain)
    that QEMU may still hold open (-U: no locking; read only what is
    frozen or after QEMU let go)."""
    raw = os.path.join(tmp, os.path.basename(qcow2) + ".raw")
    r = subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O",
                        "raw", qcow2, raw], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode:
        raise RuntimeError("qemu-img convert %s: %s" % (qcow2,
                                                        r.stdout.strip()))
    try:
        return seq_disk(raw)
    finally:
        os.unlink(raw)


def run_test(main, prefix):
    """A VM test's entry: a private libvirtd in a new temp dir, or exit 77
    with the reason; then main(lv, tmp) under wpstest.run_main."""
    import tempfile
    import wpstest
    tmp = tempfile.mkdtemp(prefix=prefix)
    lv = Libvirtd(tmp)
    try:
        lv.start()
    except Unavailable as e:
        lv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        print("# SKIP: libvirtd cannot run here: %s" % e, flush=True)
        sys.exit(77)
    except BaseException:
        lv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    wpstest.ok("private libvirtd answers on %s" % lv.sock)
    wpstest.run_main(lambda: main(lv, tmp), tmp)


def run_vm_test(main, prefix):
    """A VM test's entry: exit 77 when wpsnap was built without libvirt
    (libvirt's in-process test driver answers without a daemon), else
    run_test."""
    import wpstest
    r = subprocess.run([wpstest.WPSNAP, "vm", "snapshot", "x", "-o",
                        "/nonexistent/x", "--connect", "test:///default"],
                       stderr=subprocess.PIPE, text=True)
    if "built without libvirt" in r.stderr:
        print("# SKIP: wpsnap was built without libvirt", flush=True)
        sys.exit(77)
    run_test(main, prefix)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "watchdog":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _watchdog(sys.argv[2], sys.argv[3])
        sys.exit(0)
    print("usage: vm_lib.py watchdog MNT_NS TMPDIR (started by Libvirtd)",
          file=sys.stderr)
    sys.exit(2)
