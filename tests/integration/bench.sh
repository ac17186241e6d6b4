#!/bin/sh
# wpsnap bench end to end: --help, a bad option, and a --quick --json run
# whose report must hold every required key, measured (a number, not
# null). No timing assertions: a benchmark on a shared machine is
# information, not a verdict. Prints "N passed, N failed" for the CI summary.
set -u
. "$(dirname "$0")/tap.sh"
T=$(mktemp -d /var/tmp/wpsnap-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT
check() { name=$1; shift; if "$@" >"$T/out" 2>&1; then ok "$name"; else ko "$name"; fi; }
check_fails() { name=$1; shift; if "$@" >"$T/out" 2>&1; then ko "$name (succeeded)"; else ok "$name"; fi; }

check "bench --help" "$W" bench --help
grep -q -- "--no-baselines" "$T/out" && ok "help lists the options" || ko "help text"
check_fails "unknown option" "$W" bench --frobnicate
check_fails "bad backing" "$W" bench --backing floppy
check_fails "bad size" "$W" bench --size 12X
check_fails "stray argument" "$W" bench --quick extra

# A number: optional sign, digits, fraction, exponent.
NUM='-\{0,1\}[0-9][0-9]*\(\.[0-9]*\)\{0,1\}\([eE][-+]\{0,1\}[0-9]*\)\{0,1\}'

# key_num FILE KEY: "KEY": <number> on one line (JSON_INDENT output).
key_num() { grep -q "^ *\"$2\": $NUM,\{0,1\}\$" "$1"; }
# key_any FILE KEY: present, number or null.
key_any() { grep -q "^ *\"$2\": \($NUM\|null\),\{0,1\}\$" "$1"; }

if "$W" bench --quick --json --dir "$T" >"$T/json" 2>"$T/err"; then
	ok "bench --quick --json"
else
	ko "bench --quick --json"
	sed 's/^/#   /' "$T/err"
fi

# Measured in every run of an anon guest with random writes.
missing=
for k in pause_ms protect_ms total_ms stream_mib_s raw_write_mib_s \
	 memcpy_mib_s faults guest_rate_before guest_rate_during \
	 guest_rate_ratio fork_pause_ms fork_cow_us wp_raw_ms \
	 stop_copy_pause_ms image_bytes populated_bytes image_ratio \
	 tracker_rss_mib protect_rounds stream_vs_raw_write pause_vs_wp_raw \
	 pause_vs_fork_pause pause_vs_stop_copy guest_rate_during_vs_before; do
	key_num "$T/json" "$k" || missing="$missing $k"
done
[ -z "$missing" ] && ok "measured keys are numbers" || ko "keys missing or null:$missing"

# Present, but may be null when nothing faulted in a tiny run.
missing=
for k in fault_p50_us fault_p99_us fault_max_us fault_handler_p50_us \
	 fault_handler_p99_us fault_p50_vs_fork_cow tracker_rss_measured_mib; do
	key_any "$T/json" "$k" || missing="$missing $k"
done
[ -z "$missing" ] && ok "optional keys present" || ko "keys missing:$missing"

missing=
for k in '"ratios": {' '"targets": {' '"config": {' '"backing": "anon"' \
	 '"pattern": "random"' '"runs": 1' '"pause_le_1.5_ms": ' \
	 '"stream_ge_0.9_raw_write": ' '"image_ratio_le_1.01": '; do
	grep -q "$k" "$T/json" || missing="$missing $k"
done
[ -z "$missing" ] && ok "ratios, targets, config" || ko "missing:$missing"

# The images and scratch files are gone.
left=$(ls "$T" | grep -c '^wpsnap-bench')
[ "$left" = 0 ] && ok "no files left in --dir" || ko "$left files left in --dir"

# Without baselines, baseline keys are null and the run still succeeds.
if "$W" bench --quick --json --no-baselines --dir "$T" >"$T/json2" 2>"$T/err"; then
	ok "bench --no-baselines"
	nulls=
	for k in raw_write_mib_s memcpy_mib_s wp_raw_ms fork_pause_ms \
		 fork_cow_us stop_copy_pause_ms; do
		grep -q "^ *\"$k\": null" "$T/json2" || nulls="$nulls $k"
	done
	[ -z "$nulls" ] && ok "baseline keys are null" || ko "not null:$nulls"
	key_num "$T/json2" pause_ms && ok "snapshot still measured" || ko "pause_ms"
else
	ko "bench --no-baselines"
	sed 's/^/#   /' "$T/err"
fi

# The table: header and one row per figure.
if "$W" bench --quick --no-baselines --dir "$T" >"$T/table" 2>"$T/err"; then
	grep -q "^figure *| *wpsnap *| *baseline *| *ratio *| *target" "$T/table" &&
		ok "table header" || ko "table header"
else
	ko "bench --quick (table)"
	sed 's/^/#   /' "$T/err"
fi

# Eager restore against the raw read of the same image: every key there.
if "$W" bench --restore --quick --json --dir "$T" >"$T/json3" 2>"$T/err"; then
	missing=
	for k in restore_ms restore_mib_s raw_read_mib_s restore_vs_raw_read restore_bytes \
		 ws_bytes ws_no_wset_ms ws_wset_ms ws_wset_vs_no_wset ws_no_wset_faults ws_wset_faults; do
		grep -q "\"$k\": [0-9]" "$T/json3" || missing="$missing $k"
	done
	[ -z "$missing" ] && ok "bench --restore keys" || ko "bench --restore keys:$missing"
	[ -z "$(ls "$T" | grep wpsnap)" ] && ok "bench --restore leaves no image" ||
		ko "bench --restore left $(ls "$T")"
else
	ko "bench --restore --quick --json"
	sed 's/^/#   /' "$T/err"
fi

if "$W" bench --checkpoint --quick --json --dir "$T" >"$T/json4" 2>"$T/err"; then
	missing=
	for k in raw_walk_ms raw_memcpy_mib_s raw_store_ns first_store_ns \
		 first_store_overhead_ns pause_p50_ms pause_work_p50_ms walk_p50_ms \
		 pause_vs_raw image_vs_dirty io_vs_dirty sustained_checkpoints_per_s; do
		key_num "$T/json4" "$k" || missing="$missing $k"
	done
	[ -z "$missing" ] && ok "bench --checkpoint keys" || ko "bench --checkpoint keys:$missing"
	[ -z "$(ls "$T" | grep wpsnap)" ] && ok "bench --checkpoint leaves no image" ||
		ko "bench --checkpoint left $(ls "$T")"
else
	ko "bench --checkpoint --quick --json"
	sed 's/^/#   /' "$T/err"
fi

tap_end
