#!/bin/sh
# wpsnap snapshot --pid against processes that know nothing about wpsnap
# (tests/integration/attach_target.c, whose top comment explains why its
# check proves an image is the memory of one instant). Every target must
# survive, keep its fds, and verify its own memory afterwards (it writes
# every page again: a protection left behind would hang it, hence the
# timeouts). Prints "N passed, N failed" for the CI summary.
set -u
. "$(dirname "$0")/tap.sh"
TGT="$B/tests/integration/attach_target"
T=$(mktemp -d /var/tmp/wpsnap-attach.XXXXXX)
pids=
cleanup() {
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT

# start NAME ARGS...: run a target; sets PID, MEMFD, ANON (START-END)
start() {
	name=$1; shift
	"$TGT" "$@" >"$T/$name.out" 2>"$T/$name.err" &
	PID=$!
	pids="$pids $PID"
	i=0
	while ! grep -q '^ready' "$T/$name.out" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 300 ] && { echo "# target $name did not start"; cat "$T/$name.err"; return 1; }
		sleep 0.05
	done
	MEMFD=$(awk '/^memfd/{print $2}' "$T/$name.out")
	ANON=$(awk '/^anon/{print $2}' "$T/$name.out")
	ls -l "/proc/$PID/fd" | awk 'NR > 1 {print $9, $10, $11}' >"$T/$name.fd"
}

# sweep NAME: the target's current sweep number
sweep() {
	n=$(grep -c '^sweep' "$T/$1.out")
	kill -USR2 "$PID"
	i=0
	while [ "$(grep -c '^sweep' "$T/$1.out")" = "$n" ] && [ $i -lt 100 ]; do
		i=$((i + 1)); sleep 0.02
	done
	grep '^sweep' "$T/$1.out" | tail -1 | awk '{print $2}'
}

# finish NAME: fds unchanged, then stop it; it must verify itself, exit 0
finish() {
	ls -l "/proc/$PID/fd" | awk 'NR > 1 {print $9, $10, $11}' >"$T/$1.fd2"
	# after a kill between userfaultfd() and close() (case 9)
	if [ "${finish_fd_filter:-}" = userfaultfd ]; then
		grep -v 'anon_inode:\[userfaultfd\]' "$T/$1.fd2" >"$T/fd.tmp"
		mv "$T/fd.tmp" "$T/$1.fd2"
	fi
	if cmp -s "$T/$1.fd" "$T/$1.fd2"; then ok "$1: fds unchanged"
	else diff "$T/$1.fd" "$T/$1.fd2" >"$T/out"; ko "$1: fds unchanged"; fi
	kill -USR1 "$PID"
	i=0
	while kill -0 "$PID" 2>/dev/null && [ $i -lt 600 ]; do i=$((i + 1)); sleep 0.1; done
	if kill -0 "$PID" 2>/dev/null; then
		kill -9 "$PID"
		cp "$T/$1.err" "$T/out"; ko "$1: target hung after the snapshot (protection leaked?)"
		return
	fi
	wait "$PID"; st=$?
	if [ $st = 0 ] && grep -q '^verified' "$T/$1.out"; then ok "$1: target verified its memory and exited 0"
	else cp "$T/$1.err" "$T/out"; ko "$1: target exit status $st"; fi
}

snap() { timeout 120 "$W" snapshot --pid "$PID" -o "$T/img" --overwrite "$@" >"$T/out" 2>&1; }

# 1. memfd region, byte-exact at one instant inside the snapshot
start memfd --memfd 256 --anon 16 || exit 1
s0=$(sweep memfd)
if snap --range "$MEMFD"; then ok "memfd: snapshot"; else ko "memfd: snapshot"; fi
s1=$(sweep memfd)
grep -o 'process stopped.*' "$T/out" | sed 's/^/# /'
if "$TGT" --check "$T/img" --addr "${MEMFD%-*}" --min "$s0" --max "$s1" >"$T/out" 2>&1
then ok "memfd: image is the memory of one instant ($(cat "$T/out"))"
else ko "memfd: image consistent"; fi
# a second snapshot of the same process works too (nothing left behind)
if snap --range "$MEMFD" && "$TGT" --check "$T/img" --addr "${MEMFD%-*}" >"$T/out" 2>&1
then ok "memfd: second snapshot consistent"; else ko "memfd: second snapshot"; fi

# 2. memfd + anonymous: one instant across both
if snap --range "$MEMFD" --range "$ANON"; then
	s1=$(sweep memfd)
	if "$TGT" --check "$T/img" --addr "${MEMFD%-*}" --addr "${ANON%-*}" --min "$s0" --max "$s1" >"$T/out" 2>&1
	then ok "anon+memfd: one instant across both regions"
	else ko "anon+memfd: image consistent"; fi
elif grep -q "cannot be read here\|Operation not supported" "$T/out"; then
	sk "anon+memfd" "this libwpsnap cannot read another process's anonymous memory"
else
	ko "anon+memfd: snapshot"
fi

# 3. the default selection (heap, thread stacks, anon, memfd)
if snap; then
	ok "default selection: snapshot"
	# (no [heap] under ASan: its allocator maps its own)
	grep -q "memfd:attach_target" "$T/out" && grep -q " anon  " "$T/out" \
		&& ok "default selection: anon and memfd chosen" || ko "default selection: regions"
elif grep -q "cannot be read here\|Operation not supported" "$T/out"; then
	sk "default selection" "anonymous memory of another process unsupported"
else
	ko "default selection: snapshot"
fi
# a range that is not snapshottable memory: refused, target untouched
if snap --range 1000-2000; then ko "unmapped range refused"
elif grep -q "nothing is mapped" "$T/out"; then ok "unmapped range refused"
else ko "unmapped range: message"; fi
finish memfd

# 4. seccomp forbids userfaultfd (errno): clear error, target unharmed
start seccomp --memfd 16 --anon 16 --seccomp errno || exit 1
if snap --range "$MEMFD"; then ko "seccomp: snapshot refused"
elif grep -q "may not create a userfaultfd.*seccomp" "$T/out"; then ok "seccomp: clear error"
else ko "seccomp: message"; fi
[ ! -e "$T/img.partial" ] && ok "seccomp: no partial image" || ko "seccomp: partial image left"
finish seccomp

# 4b. a filter that would kill it: found out beforehand, target unharmed
start seckill --memfd 16 --anon 16 --seccomp kill || exit 1
if snap --range "$MEMFD"; then ko "seccomp kill: snapshot refused"
elif grep -q "seccomp filter would kill it" "$T/out"; then ok "seccomp kill: clear error"
else ko "seccomp kill: message"; fi
finish seckill

# 5. not allowed to ptrace (an unprivileged user): clear error
start eperm --memfd 16 --anon 16 || exit 1
if command -v setpriv >/dev/null; then
	if setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
	   "$W" snapshot --pid "$PID" -o "$T/nobody.img" >"$T/out" 2>&1
	then ko "no permission: refused"
	elif grep -q "cannot ptrace $PID: need root or CAP_SYS_PTRACE" "$T/out"; then ok "no permission: clear error"
	else ko "no permission: message"; fi
else
	sk "no permission" "setpriv not installed"
fi
finish eperm

# 6. the process exits mid-way (as soon as it sees itself traced)
start exiting --memfd 64 --anon 16 --exit-when-traced || exit 1
if snap --range "$MEMFD"; then ko "exit mid-way: snapshot fails"
elif grep -q "exited" "$T/out"; then ok "exit mid-way: clear error"
else ko "exit mid-way: message"; fi
[ ! -e "$T/img.partial" ] && ok "exit mid-way: no partial image" || ko "exit mid-way: partial image left"
wait "$PID" 2>/dev/null

# 8. periodic checkpoints of the same kind of process: each checkpoint,
#    flattened with its chain, is the memory of one instant
start ckpt --memfd 32 --anon 16 || exit 1
rm -rf "$T/ck"
if timeout 120 "$W" checkpoint --pid "$PID" --dir "$T/ck" --count 4 --interval 50 \
   --range "$MEMFD" --range "$ANON" >"$T/out" 2>&1
then ok "checkpoint --pid: 4 checkpoints"
else ko "checkpoint --pid: 4 checkpoints"; fi
for i in 0 1 2 3; do
	if "$W" merge "$T/ck/ckpt-00000$i.wpsnap" -o "$T/ck/m$i.wpsnap" >"$T/out" 2>&1 &&
	   "$TGT" --check "$T/ck/m$i.wpsnap" --addr "${MEMFD%-*}" --addr "${ANON%-*}" >"$T/out" 2>&1
	then ok "checkpoint $i of the process is one instant ($(cat "$T/out"))"
	else ko "checkpoint $i of the process: consistent"; fi
done
grep -q "^TracerPid:	0" "/proc/$PID/status" && ok "checkpoint --pid: not traced afterwards" ||
	ko "checkpoint --pid: still traced"
finish ckpt

# 9. wpsnap killed inside the injected syscall, at each of its stops. The
#    borrowed thread (the main one, parked in read()) must go on as if it
#    had taken a signal: its read() comes back whole and the target
#    verifies itself (before the injection returned through a signal
#    frame, the thread ran on with our registers and crashed). A kill
#    between userfaultfd() and close() leaves that one unused fd behind,
#    and no other.
for k in userfaultfd-entry userfaultfd-exit close-entry close-exit; do
	start "kill-$k" --memfd 16 --anon 16 || exit 1
	WPSNAP_ATTACH_TEST_KILL=$k timeout 120 "$W" snapshot --pid "$PID" \
		-o "$T/img" --overwrite >"$T/out" 2>&1
	st=$?
	[ $st = 137 ] && ok "killed at $k: died as told" || ko "killed at $k: exit $st"
	i=0
	while ! grep -q "^TracerPid:	0" "/proc/$PID/status" && [ $i -lt 100 ]; do
		i=$((i + 1)); sleep 0.05
	done
	grep -q "^TracerPid:	0" "/proc/$PID/status" && ok "killed at $k: not traced" ||
		ko "killed at $k: still traced"
	if [ "${k%-*}" = userfaultfd ]; then
		ls -l "/proc/$PID/fd" | awk 'NR > 1 {print $9, $10, $11}' >"$T/fd.now"
		n=$(grep -c 'anon_inode:\[userfaultfd\]' "$T/fd.now")
		[ "$n" -le 1 ] && ok "killed at $k: at most one userfaultfd left ($n)" ||
			ko "killed at $k: $n userfaultfds left"
	fi
	finish_fd_filter=${k%-*}
	finish "kill-$k"
	finish_fd_filter=
done

# 7. no such process
PID=999999999
if snap; then ko "missing pid refused"
elif grep -q "no process\|bad pid" "$T/out"; then ok "missing pid: clear error"
else ko "missing pid: message"; fi
sh -c 'exit 0' & dead=$!; wait $dead
PID=$dead
if snap; then ko "exited pid refused"
elif grep -q "no process $dead" "$T/out"; then ok "exited pid: clear error"
else ko "exited pid: message"; fi

tap_end
