#!/bin/bash
# Run every fuzz target for its share of SECONDS_TOTAL over a temporary
# copy of its seed corpus (new inputs never land in the source tree), with
# ASan+UBSan, LeakSanitizer, -timeout=10 and -rss_limit_mb=2048. Prints
# execs/s and coverage (cov/ft) per target; exits non-zero on any crash,
# leak, timeout or OOM, after printing the reproducer path and the stack.
#
# Usage: tests/fuzz/run.sh SECONDS_TOTAL  (after `make fuzz`)
#   WPSNAP_BUILDDIR  where the fuzz_* binaries are (default: the tree)
#   FUZZ_TARGETS     the targets to run (default: all built)
set -uo pipefail
total=${1:?usage: run.sh SECONDS_TOTAL}
src=$(cd "$(dirname "$0")" && pwd)
build=${WPSNAP_BUILDDIR:-$src/../..}/tests/fuzz
# vm_dir exists when configure found libvirt
vm=; [ -x "$build/fuzz_vm_dir" ] && vm=vm_dir
targets=${FUZZ_TARGETS:-image chain qmp ledger wset netbuf nbd_uri qemu_layout $vm}

# -max_len per target: image inputs are sparse descriptions (fuzzutil.h)
max_len() {
	case $1 in
	image) echo 16384 ;; chain) echo 49152 ;; qmp) echo 8192 ;;
	ledger|wset|qemu_layout) echo 4096 ;; vm_dir) echo 8192 ;;
	*) echo 512 ;;
	esac
}

n=0
for t in $targets; do
	[ -x "$build/fuzz_$t" ] || { echo "run.sh: $build/fuzz_$t is missing: run make fuzz" >&2; exit 2; }
	n=$((n + 1))
done
share=$((total / n)); [ "$share" -ge 1 ] || share=1
work=$(mktemp -d /tmp/wpsfuzz-run.XXXXXX)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=0
printf '%-11s %6s %10s %9s %7s %7s %s\n' target secs execs execs/s cov ft result
for t in $targets; do
	mkdir -p "$work/$t/corpus" "$work/$t/art"
	cp -r "$src/corpus/$t/." "$work/$t/corpus/" 2>/dev/null
	log=$work/$t/log
	"$build/fuzz_$t" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
		-max_total_time="$share" -print_final_stats=1 \
		-artifact_prefix="$work/$t/art/" "$work/$t/corpus" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	last=$(grep -E '^#[0-9]+' "$log" | tail -1)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	if [ "$rc" -eq 0 ]; then res=ok; else res="FAILED (exit $rc)"; failed=1; fi
	printf '%-11s %6s %10s %9s %7s %7s %s\n' "$t" "$share" "${execs:-?}" \
		"${eps:-?}" "${cov:-?}" "${ft:-?}" "$res"
	if [ "$rc" -ne 0 ]; then
		keep=/tmp/wpsfuzz-$t-$(date +%s)
		cp -r "$work/$t/art" "$keep"
		echo "---- fuzz_$t: reproducer(s), kept in $keep:"
		ls "$keep"/* 2>/dev/null | sed 's/^/     /'
		echo "     rerun: $build/fuzz_$t $keep/<file>"
		echo "---- fuzz_$t: report"
		grep -n -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|==ERROR|ALARM|out-of-memory|deadly signal' "$log" >/dev/null &&
			sed -n '/==[0-9]*==ERROR\|runtime error\|ALARM\|out-of-memory\|deadly signal/,$p' "$log" | head -80 ||
			tail -60 "$log"
	fi
done
exit $failed
