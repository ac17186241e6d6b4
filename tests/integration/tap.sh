# Sourced by the shell tests: where the build is, and TAP-style results
# ("ok - ...", "not ok - ...", and a last line "N passed, N failed" for
# the CI summary). ko also shows $T/out, the output a test captured last,
# when the test has one.
B=${WPSNAP_BUILDDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
W="$B/tools/wpsnap"
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
ko() {
	fail=$((fail + 1)); echo "not ok - $1"
	if [ -n "${T:-}" ] && [ -f "$T/out" ]; then sed 's/^/#   /' "$T/out"; fi
	return 0   # callers write `cond && ko X || ok Y`
}
sk() { skip=$((skip + 1)); echo "ok - $1 # SKIP $2"; }
# The summary line; the script's exit status: 1 on any failure, 77
# (automake's SKIP) when everything was skipped, so a run that tested
# nothing is never counted as a pass.
tap_end() {
	if [ "$skip" -gt 0 ]; then
		echo "$pass passed, $fail failed, $skip skipped"
	else
		echo "$pass passed, $fail failed"
	fi
	[ "$fail" = 0 ] || return 1
	if [ "$pass" = 0 ] && [ "$skip" -gt 0 ]; then return 77; fi
	return 0
}
