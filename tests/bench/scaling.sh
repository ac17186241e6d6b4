#!/bin/sh
# The scaling table of docs/PERFORMANCE.md: wpsnap bench for 256 MiB,
# 1 GiB and 4 GiB guests of each backing, one random writer, 3 runs each.
# Needs root (huge pages are reserved for the hugetlb rows and given back).
# Usage: tests/bench/scaling.sh [OUTDIR]   (JSON per run + table.md in OUTDIR)
set -eu
B=${WPSNAP_BUILDDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
OUT=${1:-/var/tmp/wpsnap-scaling}
SIZES=${SIZES:-"256M 1G 4G"}
BACKINGS=${BACKINGS:-"anon thp memfd hugetlb"}
mkdir -p "$OUT"
nr=/proc/sys/vm/nr_hugepages
old=$(cat $nr)
trap 'echo "$old" > $nr' EXIT
for s in $SIZES; do
	for b in $BACKINGS; do
		if [ "$b" = hugetlb ]; then
			# guest + one baseline buffer at a time, in 2 MiB pages
			case $s in *G) mib=$(( ${s%G} * 1024 ));; *M) mib=${s%M};; esac
			echo $(( old + mib / 2 + 16 )) > $nr
		fi
		echo "== $s $b" >&2
		"$B/tools/wpsnap" bench --size "$s" --backing "$b" --runs 3 --json \
			>"$OUT/$s-$b.json" 2>"$OUT/$s-$b.log" || echo "failed: $s $b" >&2
		[ "$b" = hugetlb ] && echo "$old" > $nr
	done
done
python3 - "$OUT" <<'PY' >"$OUT/table.md"
import json, sys, glob, os
out = sys.argv[1]
def f(v, fmt="%.3g"):
    return "n/a" if v is None else (fmt % v)
print("| guest | pause ms | raw WP ms | fork pause ms | total ms | stream MiB/s | raw write MiB/s | stream/raw | fault p50/p99 us (guest) | handler p50/p99 us | guest rate during/before | image/populated | tracker MiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
def key(p):
    s, b = os.path.basename(p)[:-5].split("-")
    mult = {"M": 1, "G": 1024}[s[-1]]
    return (int(s[:-1]) * mult, ["anon", "thp", "memfd", "hugetlb"].index(b))
for p in sorted(glob.glob(out + "/*.json"), key=key):
    try:
        j = json.load(open(p))
    except Exception:
        continue
    r = j["ratios"]
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %s | %s |" % (
        os.path.basename(p)[:-5], f(j["pause_ms"]), f(j["wp_raw_ms"]),
        f(j["fork_pause_ms"]), f(j["total_ms"], "%.0f"), f(j["stream_mib_s"], "%.0f"),
        f(j["raw_write_mib_s"], "%.0f"), f(r["stream_vs_raw_write"], "%.2f"),
        f(j["fault_p50_us"], "%.0f"), f(j["fault_p99_us"], "%.0f"),
        f(j["fault_handler_p50_us"], "%.0f"), f(j["fault_handler_p99_us"], "%.0f"),
        f(j["guest_rate_ratio"], "%.3f"), f(j["image_ratio"], "%.3f"),
        f(j["tracker_rss_measured_mib"], "%.0f")))
PY
cat "$OUT/table.md"
