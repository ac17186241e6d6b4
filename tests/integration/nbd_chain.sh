#!/bin/sh
# Checkpoint chains on one NBD export (stream/nbd_chain.c, docs/REMOTE.md
# "Checkpoints on an export"). In a network namespace made here: the
# reference guest (two writers) checkpoints into an nbdkit file export
# (TCP) and a qemu-nbd export (Unix socket); every member #N is restored
# through its chain and checked block for block against the ledger of its
# instant; the plain URI is the last durable checkpoint (eager and lazy
# restore, inspect). The table's crash safety: the copy of the newest
# generation torn by hand leaves the previous checkpoint as the last one,
# intact; wpsnap SIGKILLed mid-series and the server killed mid-series
# leave a last checkpoint that equals its ledger. Refusals: a second
# series without --overwrite (the chain stays), a member that
# does not exist, a plain snapshot over a chain, a full export (ENOSPC
# named, the earlier checkpoints intact). The reader's timeout: a restore
# from a server that stops answering fails with ETIMEDOUT, named.
# Retention (--keep 2) in an export that holds four images: ten
# checkpoints wrap round it, the newest verify against their ledgers, a
# reclaimed one is refused naming the oldest kept, and wpsnap SIGKILLed
# after the wrap leaves a last checkpoint equal to its ledger.
# Skipped (77) without root, nbdkit, python3 or network namespaces.
# Prints "N passed, N failed".
set -u
. "$(dirname "$0")/tap.sh"
G="$B/tools/wpsnap-guest"
. "$(dirname "$0")/nbd_lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, userfaultfd)"
command -v ip >/dev/null 2>&1 || skip "ip not installed"
command -v nbdkit >/dev/null 2>&1 || skip "nbdkit not installed (contrib/install-deps.sh)"
command -v python3 >/dev/null 2>&1 || skip "python3 not installed"

T=$(mktemp -d /var/tmp/wpsnap-nbdc.XXXXXX)
NS=wpsnbdc-$$
nbd_setup

# ckpt URI LEDGERS COUNT [OPTION...]: a checkpoint series to URI
ckpt() {
	local U=$1 L=$2 c=$3
	shift 3
	N "$W" checkpoint --dir "$U" --count "$c" --interval 50 --size 32M \
		--threads 2 --pattern hot --rate 40 --ledger-dir "$L" "$@"
}
# series NAME URI LEDGERS COUNT [OPTION...]: one that must succeed
series() {
	local n=$1
	shift
	run "$n: $3 checkpoints to the export" ckpt "$@"
}

# every NAME URI LEDGERS COUNT: each member through its chain = its ledger
every() {
	local n=$1 U=$2 L=$3 c=$4 i=0
	while [ $i -lt "$c" ]; do
		run "$n: #$i through its chain equals its ledger" \
			N "$W" chain "$U#$i" --ledger "$L/ckpt-00000$i.ledger"
		if grep -q "every block matches" "$T/out" &&
		   [ "$(grep -c 'incremental' "$T/out")" = "$i" ]; then
			ok "$n: #$i is a chain of $((i + 1)) on the export"
		else
			ko "$n: #$i is a chain of $((i + 1)) on the export"
		fi
		i=$((i + 1))
	done
}

# last NAME URI LEDGER: the plain URI is the last durable checkpoint
last() {
	local n=$1 U=$2 L=$3
	run "$n: eager restore of the export's last checkpoint" \
		N "$W" restore "$U" --ledger "$L"
	has "$n: eager restore verified every block" "every block as at the freeze"
	run "$n: lazy restore of the export's last checkpoint" \
		N "$W" restore "$U" --lazy --writers 2 --ledger "$L"
	has "$n: lazy restore verified" "verified: every block as in"
}

# The newest generation of the table (0 or 1: its slot), from the file.
newest_slot() {
	python3 - "$1" <<'EOF'
import struct, sys, zlib
f = open(sys.argv[1], "rb")
best, slot = 0, -1
for k in (0, 1):
    f.seek(k * 65536)
    h = f.read(64)
    if h[:8] == b"WPSCHAIN":
        gen = struct.unpack_from("<Q", h, 16)[0]
        if gen > best:
            best, slot = gen, k
print(slot)
EOF
}

TCP=nbd://127.0.0.1:10809/
truncate -s 1G "$T/c.raw"
serve "nbdkit file, TCP" $TCP nbdkit -f -i 127.0.0.1 file "$T/c.raw" || { tap_end; exit; }
series nbdkit $TCP "$T/L" 4
every nbdkit $TCP "$T/L" 4
last nbdkit $TCP "$T/L/ckpt-000003.ledger"
run "inspect of the export shows its chain of 4" N "$W" inspect $TCP
has "inspect: the last member is #3" "chain 3 .*incremental.*127.0.0.1:10809/$"
has "inspect: #2 is its parent" "chain 2 .*incremental.*:10809/#2$"
fails "a member that does not exist" N "$W" inspect "$TCP#7"
has "named, with what the chain holds" "the export's chain has no checkpoint #7 (it holds #0 to #3)"
fails "a member that is not a number" N "$W" inspect "${TCP}#x"
has "named as not a checkpoint" "'#x' does not name a checkpoint"

fails "a second series without --overwrite is refused" ckpt $TCP "$T/L2" 1
has "refusal names the chain" "the export holds a chain of 4 checkpoint(s), the last #3 (not overwriting)"
run "the chain is intact after the refusal" N "$W" chain $TCP --ledger "$T/L/ckpt-000003.ledger"
fails "a plain snapshot over a chain is refused" N "$G" --size 16M --snapshot $TCP
has "refusal names the chain" "the export holds a checkpoint chain (not overwriting)"
run "the chain is intact after that" N "$W" chain $TCP --ledger "$T/L/ckpt-000003.ledger"

# A torn table write: the copy of the newest generation damaged by hand
# (as a crash in the middle of writing it would leave it). The other
# copy, one generation older, is the previous state: #2 is the last.
slot=$(newest_slot "$T/c.raw")
if [ "$slot" = 0 ] || [ "$slot" = 1 ]; then
	printf 'torn' | dd of="$T/c.raw" bs=1 seek=$((slot * 65536 + 100)) conv=notrunc 2>/dev/null
	run "a torn newest table copy: the previous one is read" N "$W" chain $TCP \
		--ledger "$T/L/ckpt-000002.ledger"
	has "the last checkpoint is then #2, equal to its ledger" "every block matches"
	fails "#3 is not in the table read" N "$W" inspect "$TCP#3"
	# and the next series starts over it (--overwrite), cleanly
	rm -rf "$T/L"
	series "over a torn table" $TCP "$T/L" 2 --overwrite
	every "over a torn table" $TCP "$T/L" 2
else
	ko "the table has a newest copy (slot '$slot')"
fi
stop_srv

# The reader's timeout: the server stops answering (SIGSTOP) while a
# restore reads the chain from it (a rate filter keeps it reading for
# seconds). The restore fails within WPSNAP_NBD_TIMEOUT (2 s here) with
# ETIMEDOUT, naming the server, what waited and the timeout.
stalled_restore() {
	local waiter i
	(
		i=0
		until N ss -Htn state established "( sport = :10809 )" | grep -q .; do
			i=$((i + 1)); [ $i -ge 300 ] && exit 1; sleep 0.05
		done
		sleep 0.5; kill -STOP $srv
	) &
	waiter=$!
	fails "a restore fails when the server stops answering" \
		N env WPSNAP_NBD_TIMEOUT=2 "$W" restore $TCP --ledger "$T/L/ckpt-000001.ledger"
	wait $waiter || ko "the restore's connection was seen"
	has "the error names the server, what waited and the timeout" \
		"image nbd://127.0.0.1:10809/.*: the NBD server did not answer .* within 2 s (stalled server or cut link; WPSNAP_NBD_TIMEOUT"
	has "the failure is ETIMEDOUT" "Connection timed out"
	kill -CONT $srv
}
serve "slow nbdkit file" $TCP nbdkit -f -i 127.0.0.1 --filter=rate file "$T/c.raw" \
	rate=8M && stalled_restore
stop_srv

# Killed mid-series: wpsnap (SIGKILL) and the server (SIGKILL), each
# while checkpoints follow one another (every 20 ms: a kill lands in a
# take far more often than between two). The table must name a last
# checkpoint that equals its ledger (the ledger is written before the
# commit, so every durable checkpoint has one).
# killed NAME WHO FILE AFTER [OPTION...]: WHO is "wpsnap" or "server",
# FILE the export's file, AFTER the checkpoints to see before the kill
killed() {
	local n=$1 who=$2 f=$3 after=$4 ck i seq
	shift 4
	rm -rf "$T/K"
	: >"$T/ck.out"   # there before the background job opens it
	ip netns exec $NS "$W" checkpoint --dir $TCP --count 0 --interval 20 \
		--size 32M --threads 2 --pattern hot --rate 40 --ledger-dir "$T/K" \
		--overwrite "$@" >"$T/ck.out" 2>&1 &
	ck=$!
	# after AFTER checkpoints, mid-way through a later one
	i=0
	until [ "$(grep -c '^[0-9]' "$T/ck.out")" -ge "$after" ]; do
		i=$((i + 1))
		if [ $i -ge 1200 ] || ! kill -0 $ck 2>/dev/null; then break; fi
		sleep 0.05
	done
	sleep 0.3
	if [ "$who" = wpsnap ]; then kill -9 $ck; else kill -9 $srv; fi
	wait $ck 2>/dev/null
	[ "$who" = server ] && { wait $srv 2>/dev/null; srv=; }
	cp "$T/ck.out" "$T/out"
	if [ "$(grep -c '^[0-9]' "$T/ck.out")" -ge "$after" ]; then ok "$n: checkpoints ran"
	else ko "$n: checkpoints ran"; sed 's/^/#   server: /' "$T/srv.log"; fi
	[ "$who" = server ] && has "$n: the series fails, naming the NBD server" \
		"the series stopped at checkpoint"
	stop_srv
	serve "$n: server (back)" $TCP nbdkit -f -i 127.0.0.1 file "$f" || return
	# The last durable checkpoint has a ledger (written before its
	# commit): the newest ledger's, or the one before if that one's
	# take was killed before its table entry.
	seq=$(ls "$T/K" | sed -n 's/^ckpt-0*\([0-9][0-9]*\)\.ledger$/\1/p' | sort -n | tail -1)
	seq=${seq:-0}
	N "$W" inspect "$TCP#$seq" >/dev/null 2>&1 || seq=$((seq - 1))
	if [ -f "$T/K/ckpt-$(printf %06d $seq).ledger" ]; then
		ok "$n: the last checkpoint (#$seq) has its ledger"
		run "$n: it restores through its chain equal to its ledger" \
			N "$W" chain $TCP --ledger "$T/K/ckpt-$(printf %06d $seq).ledger"
		has "$n: every block matches" "every block matches"
		run "$n: lazy restore of it verified" N "$W" restore $TCP --lazy \
			--ledger "$T/K/ckpt-$(printf %06d $seq).ledger"
	else
		ko "$n: the last checkpoint (#$seq) has its ledger"
	fi
	echo "# $n: last durable checkpoint #$seq"
}
serve "nbdkit file" $TCP nbdkit -f -i 127.0.0.1 file "$T/c.raw" &&
	killed "wpsnap killed" wpsnap "$T/c.raw" 2
stop_srv
serve "nbdkit file" $TCP nbdkit -f -i 127.0.0.1 file "$T/c.raw" &&
	killed "server killed" server "$T/c.raw" 2
stop_srv

# A full export: 32 MiB images, room for two. The third is refused at
# its open (before anything is written), named; #0 and #1 stay intact.
serve "nbdkit memory 80M" $TCP nbdkit -f -i 127.0.0.1 memory 80M &&
	fails "a full export ends the series" ckpt $TCP "$T/F" 3
has "ENOSPC, named: export full, earlier checkpoints intact" \
	"export full (they stay intact)"
has "the series stops at checkpoint 2" "the series stopped at checkpoint 2: No space left on device"
every full $TCP "$T/F" 2
stop_srv

# Retention: 32 MiB images (about 35 MB of export each), an export of
# 150 MiB holds four, what --keep 2 needs at most (docs/REMOTE.md
# "Retention": the last two and the full image they depend on, plus the
# one being written). Ten checkpoints wrap round it.
truncate -s 150M "$T/r.raw"
serve "nbdkit file 150M" $TCP nbdkit -f -i 127.0.0.1 file "$T/r.raw" &&
	series "--keep 2" $TCP "$T/R" 10 --keep 2
# (ten images cannot fit in four places: #8 and #9 are wrapped ones)
for i in 8 9; do
	run "--keep 2: #$i through its chain equals its ledger" \
		N "$W" chain "$TCP#$i" --ledger "$T/R/ckpt-00000$i.ledger"
	has "--keep 2: #$i: every block matches" "every block matches"
done
run "--keep 2: the last one is #9" N "$W" chain $TCP --ledger "$T/R/ckpt-000009.ledger"
fails "--keep 2: a reclaimed checkpoint is refused" N "$W" inspect "$TCP#1"
has "--keep 2: named, with the oldest kept" \
	"checkpoint #1 was reclaimed by retention (--keep); the oldest one kept is #"
stop_srv
serve "nbdkit file 150M" $TCP nbdkit -f -i 127.0.0.1 file "$T/r.raw" &&
	killed "--keep 2, wpsnap killed after the wrap" wpsnap "$T/r.raw" 6 --keep 2
stop_srv

if command -v qemu-nbd >/dev/null 2>&1; then
	UNIX="nbd+unix:///?socket=$T/sock"
	truncate -s 512M "$T/q.raw"
	serve "qemu-nbd raw file, Unix socket" "$UNIX" qemu-nbd -f raw -t \
		--shared=5 --cache=none -k "$T/sock" "$T/q.raw" &&
		series qemu-nbd "$UNIX" "$T/Q" 3 && every qemu-nbd "$UNIX" "$T/Q" 3 &&
		last qemu-nbd "$UNIX" "$T/Q/ckpt-000002.ledger"
	stop_srv
else
	sk "qemu-nbd export" "qemu-nbd not installed"
fi

sanitizer_verdict
tap_end
