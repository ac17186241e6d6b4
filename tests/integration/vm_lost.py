#!/usr/bin/env python3
# libvirt lost in the middle of a VM snapshot (issue 14, "Bad input and
# faults"; docs/VM.md): libvirtd is killed while wpsnap holds the domain
# suspended (a test hook, $WPSNAP_VM_TEST_STALL_MS, keeps wpsnap inside
# the pause long enough). wpsnap cannot resume the domain through
# libvirt; it must resume it anyway (QMP cont on QEMU's own monitor
# socket, freed by libvirtd's death), fail with a clear error, publish
# nothing, and leave nothing of itself in QEMU. The guest must run on:
# its RAM record of the disk sequence moves.
#
# Exit 77 when libvirtd cannot run here or wpsnap was built without
# libvirt. Prints "N passed, N failed".
import glob, json, os, socket, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vm_lib as vl  # noqa: E402
import wpstest  # noqa: E402
from wpstest import check  # noqa: E402
import vm_snapshot as vs  # noqa: E402


class Qmp:
    """A QMP client on QEMU's own monitor socket (libvirtd is gone)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(10)
        self.s.connect(path)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())          # the greeting
        self.cmd("qmp_capabilities")

    def cmd(self, execute, **args):
        msg = {"execute": execute}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r or "error" in r:
                return r

    def close(self):
        self.f.close()
        self.s.close()


def ram_seq(q, tmp):
    path = os.path.join(tmp, "lost.seq")
    q.cmd("pmemsave", val=vl.SEQ_RAM_ADDR, size=64, filename=path)
    with open(path, "rb") as f:
        return vl.seq_ram(f.read(64))


def direct_qmp(lv, d):
    socks = glob.glob(os.path.join(lv.root, "lib", "qemu", "domain-*-" + d,
                                   "monitor.sock"))
    try:
        return Qmp(socks[0]) if socks else None
    except OSError as e:
        check("%s: QEMU's monitor socket answers" % d, False, str(e))
        return None


def runs_on(lv, tmp, d, pid):
    q = direct_qmp(lv, d)
    try:
        st = q.cmd("query-status")["return"] if q else {}
        check("%s: QEMU runs (query-status on its monitor socket)" % d,
              st.get("running") is True, st)
        first = ram_seq(q, tmp) if q else None
        time.sleep(1)
        later = ram_seq(q, tmp) if q else None
        check("%s: the guest goes on (its disk sequence moves)" % d,
              first and later and later["done"] > first["done"],
              "%s then %s" % (first, later))
    finally:
        if q:
            q.close()
    vs.clean_of_us(pid, "%s after libvirt was lost" % d)


def main(lv, tmp):
    # a: wpsnap lives and resumes the domain itself; b: wpsnap is killed
    # too, and its watchdog's virsh resume fails: the watchdog's cont
    doms = ("wpsnap-lost-a", "wpsnap-lost-b")
    pids, procs = [], {}
    try:
        for d in doms:
            vs.boot(lv, tmp, "shared", d)
            pids.append(lv.qemu_pid(d))
        env = dict(os.environ, WPSNAP_VM_TEST_STALL_MS="4000")
        for d in doms:
            procs[d] = subprocess.Popen(
                [wpstest.WPSNAP, "vm", "snapshot", d, "-o",
                 os.path.join(tmp, d + ".snap"), "--connect", lv.uri],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
        ok_ = wpstest.wait_for(lambda: all(vs.state(lv, d) == "paused"
                                           for d in doms), 60)
        check("both snapshots suspend their domain", ok_,
              [vs.state(lv, d) for d in doms])
        procs[doms[1]].kill()   # wpsnap b, inside the pause
        lv.proc.kill()          # libvirtd, SIGKILL, inside both pauses
        lv.proc.wait()
        res = {}
        for d in doms:
            try:
                res[d] = procs[d].communicate(timeout=120)
            except subprocess.TimeoutExpired:
                procs[d].kill()
                res[d] = procs[d].communicate()
        a, b = doms
        err = res[a][1]
        check("%s: the snapshot fails (exit 1)" % a,
              procs[a].returncode == 1,
              "%s: %s" % (procs[a].returncode, err.strip()))
        check("%s: the error says libvirt failed, and how the domain was "
              "resumed" % a, "resume through libvirt failed" in err and
              "resumed with QMP cont on QEMU's monitor socket" in err,
              err.strip())
        check("%s: the watchdog resumed it when virsh could not" % b,
              "died while QEMU was stopped: continued it" in res[b][1],
              res[b][1].strip())
        for d in doms:
            snap = os.path.join(tmp, d + ".snap")
            if d == a:
                check("%s: nothing published" % d,
                      not glob.glob(snap + "*"), glob.glob(snap + "*"))
            else:
                check("%s: nothing published under the final name" % d,
                      not os.path.exists(snap), snap)
            runs_on(lv, tmp, d, lv.qemu_pid(d))
    except SystemExit as e:
        wpstest.ko("main", "terminated (exit %s): cleaning up" % e.code)
        raise
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        lv.finish(pids)


if __name__ == "__main__":
    vl.run_vm_test(main, "wpsnap-vmlost.")
