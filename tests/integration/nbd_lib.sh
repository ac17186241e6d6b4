# Sourced by the NBD shell tests (nbd_write.sh, nbd_chain.sh) after
# tap.sh: a network namespace of the test's own (its loopback, so no port
# is shared with anything on the host), one NBD server in it at a time,
# and the run/has/fails checks over "$T/out". The caller sets T (a
# temporary directory) and NS (the namespace name) and calls nbd_setup
# once its own skips are done.
skip() { echo "SKIP: $1"; exit 77; }
srv=
stop_srv() { [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null; srv=; }
nbd_cleanup() { stop_srv; ip netns del $NS 2>/dev/null; rm -rf "$T"; }
nbd_setup() {
	trap nbd_cleanup EXIT
	trap 'exit 1' INT TERM HUP
	ip netns add $NS || skip "cannot create a network namespace"
	ip -n $NS link set lo up
	: >"$T/all"
}
N() { ip netns exec $NS "$@"; }
run() { local n=$1; shift; if "$@" >"$T/out" 2>&1; then ok "$n"; else ko "$n"; fi; cat "$T/out" >>"$T/all"; }
has() { if grep -q -- "$2" "$T/out"; then ok "$1"; else ko "$1"; fi; }
# fails NAME CMD...: must fail
fails() { local n=$1; shift; if "$@" >"$T/out" 2>&1; then ko "$n (it succeeded)"; else ok "$n"; fi; cat "$T/out" >>"$T/all"; }

# serve NAME URI CMD...: start a server in the namespace, wait until it
# answers (an empty export is fine: any answer but a refusal).
serve() {
	local n=$1 uri=$2 i=0
	shift 2
	rm -f "$T/sock"
	# Not through N: a backgrounded shell function is a subshell, and
	# killing it would leave the server running.
	ip netns exec $NS "$@" >"$T/srv.log" 2>&1 &
	srv=$!
	while N "$W" inspect "$uri" 2>&1 | grep -q "cannot connect"; do
		i=$((i + 1))
		if [ $i -ge 100 ] || ! kill -0 $srv 2>/dev/null; then
			ko "$n: server started"
			sed 's/^/#   server: /' "$T/srv.log"
			return 1
		fi
		sleep 0.1
	done
	# Answered by ours, not by one that has not let go of the port yet.
	kill -0 $srv 2>/dev/null && return 0
	ko "$n: server started"
	sed 's/^/#   server: /' "$T/srv.log"
	return 1
}

# The sanitizers' verdict over everything the checks captured.
sanitizer_verdict() {
	grep -q "ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer" "$T/all" &&
		ko "no sanitizer report" || ok "no sanitizer report"
}
