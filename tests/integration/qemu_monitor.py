#!/usr/bin/env python3
# The monitor side of the library's QEMU module (<wpsnap/qemu.h>) against
# an unmodified QEMU running tools/qguest, through
# tests/integration/qemu_monitor.c: the version and machine type the
# layout records equal what QEMU says on the test's own QMP connection;
# QMP and HMP pass through; an fd passed with getfd (SCM_RIGHTS, what
# `migrate fd:` needs) is held by QEMU until closefd; a bad argument text
# is -EINVAL and a refused command -EIO. QEMU keeps running throughout.
#
# Exit 77 (skip) only when qemu-system-x86_64 is not installed.
import errno, os, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qemu_lib as ql  # noqa: E402
import wpstest  # noqa: E402
from wpstest import check  # noqa: E402

HELPER = os.path.join(wpstest.B, "tests", "integration", "qemu_monitor")


def main():
    if not ql.find_qemu():
        print("1..0 # SKIP qemu-system-x86_64 is not installed")
        return 77
    T = tempfile.mkdtemp(prefix="wpsnap-qmon.", dir="/var/tmp")
    g = ql.Guest(T, 64, "anon", "pattern=seq size=8", name="mon")
    try:
        g.wait_ready(300)
        r = subprocess.run([HELPER, g.qmp_wpsnap], capture_output=True,
                           text=True, timeout=120)
        if not check("helper ran", r.returncode == 0,
                     "exit %d: %s" % (r.returncode, r.stderr.strip())):
            return wpstest.summary()
        got = dict(l.split(" ", 1) for l in r.stdout.splitlines()
                   if " " in l)
        v = g.qmp.cmd("query-version")["qemu"]
        ver = "%d.%d.%d" % (v["major"], v["minor"], v["micro"])
        mach = g.qmp.cmd("qom-get", path="/machine", property="type")
        check("pid is QEMU's", got.get("pid") == str(g.pid), got.get("pid"))
        check("version recorded", got.get("version") == ver,
              "%s != %s" % (got.get("version"), ver))
        check("machine type recorded (%s)" % got.get("machine"),
              got.get("machine") and
              got.get("machine") + "-machine" == mach,
              "%s vs %s" % (got.get("machine"), mach))
        check("guest RAM found", got.get("saved-blocks") == "1",
              got.get("saved-blocks"))
        check("QMP passthrough", '"running": true' in
              got.get("query-status", "").replace('":true', '": true'),
              got.get("query-status"))
        check("HMP passthrough", got.get("hmp-info-version", "")
              .startswith(ver), got.get("hmp-info-version"))
        check("bad argument text: -EINVAL",
              got.get("bad-args") == str(-errno.EINVAL), got.get("bad-args"))
        check("getfd", got.get("getfd") == "0", got.get("getfd"))
        check("QEMU holds the fd passed", got.get("held-after-getfd") == "1",
              got.get("held-after-getfd"))
        check("closefd", got.get("closefd") == "0", got.get("closefd"))
        check("QEMU let go of the fd", got.get("held-after-closefd") == "0",
              got.get("held-after-closefd"))
        check("closefd again: refused, -EIO with QEMU's reason",
              got.get("closefd-again") == str(-errno.EIO) and
              "closefd refused" in r.stderr, r.stderr.strip())
        check("QEMU still runs", g.status() == "running", g.status())
    finally:
        g.close()
        shutil.rmtree(T, ignore_errors=True)
    return wpstest.summary()


if __name__ == "__main__":
    sys.exit(main())
