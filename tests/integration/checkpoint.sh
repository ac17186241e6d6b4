#!/bin/sh
# wpsnap checkpoint / chain / merge from the command line: periodic
# checkpoints of the reference guest under writers, every instant restored
# through its chain and checked block for block against the guest's ledger
# of that instant, merge, retention while running, and the errors for a
# missing or mismatched parent. Prints "N passed, N failed".
set -u
. "$(dirname "$0")/tap.sh"
T=$(mktemp -d /var/tmp/wpsnap-ckpt.XXXXXX)
trap 'rm -rf "$T"' EXIT

for b in anon memfd; do
	D="$T/$b"
	if "$W" checkpoint --dir "$D" --count 4 --interval 50 --size 64M \
	   --backing $b --threads 2 --pattern hot --rate 40 --ledger >"$T/out" 2>&1
	then ok "$b: 4 checkpoints"; sed 's/^/# /' "$T/out"
	else ko "$b: 4 checkpoints"; continue; fi
	for i in 0 1 2 3; do
		if "$W" chain "$D/ckpt-00000$i.wpsnap" --ledger "$D/ckpt-00000$i.ledger" \
		   >"$T/out" 2>&1 && grep -q "every block matches" "$T/out" &&
		   [ "$(grep -c 'incremental' "$T/out")" = "$i" ]
		then ok "$b: checkpoint $i restored through its chain of $((i + 1)) equals the ledger"
		else ko "$b: checkpoint $i through its chain"; fi
	done
	if "$W" restore "$D/ckpt-000003.wpsnap" --ledger "$D/ckpt-000003.ledger" >"$T/out" 2>&1 &&
	   grep -q "through a chain of 4 images" "$T/out"
	then ok "$b: wpsnap restore of an increment follows its chain (eager)"
	else ko "$b: eager restore through the chain"; fi
	if "$W" restore --lazy "$D/ckpt-000002.wpsnap" --ledger "$D/ckpt-000002.ledger" \
	   >"$T/out" 2>&1 && grep -q "verified" "$T/out" &&
	   [ -z "$(ls "$D" | grep lazy-merge)" ]
	then ok "$b: lazy restore of an increment follows its chain, leaves no file"
	else ko "$b: lazy restore through the chain"; fi
	if "$W" inspect "$D/ckpt-000003.wpsnap" >"$T/out" 2>&1 &&
	   grep -q "^chain 3 .*incremental.*ckpt-000003" "$T/out" &&
	   grep -q "^chain 0 .*full.*ckpt-000000" "$T/out"
	then ok "$b: inspect shows the chain"; else ko "$b: inspect chain"; fi
	if "$W" verify "$D/ckpt-000003.wpsnap" --ledger "$D/ckpt-000003.ledger" >"$T/out" 2>&1
	then ko "$b: verify --ledger of an increment alone refused"
	elif grep -q "is incremental.*wpsnap chain" "$T/out"
	then ok "$b: verify --ledger of an increment alone: clear error"
	else ko "$b: verify of an increment: message"; fi
	if "$W" merge "$D/ckpt-000003.wpsnap" -o "$T/$b-merged.wpsnap" >"$T/out" 2>&1 &&
	   "$W" verify "$T/$b-merged.wpsnap" --ledger "$D/ckpt-000003.ledger" >"$T/out" 2>&1
	then ok "$b: merged chain is one full image equal to the last instant"
	else ko "$b: merge"; fi
done

# retention while checkpointing: at most 3 images, the newest restorable
D="$T/keep"
if "$W" checkpoint --dir "$D" --count 6 --interval 20 --size 32M --keep 3 \
   --ledger --rate 40 >"$T/out" 2>&1 &&
   [ "$(ls "$D"/*.wpsnap | wc -l)" = 3 ] &&
   "$W" chain "$D/ckpt-000005.wpsnap" --ledger "$D/ckpt-000005.ledger" >"$T/out" 2>&1 &&
   "$W" chain "$D/ckpt-000003.wpsnap" --ledger "$D/ckpt-000003.ledger" >>"$T/out" 2>&1
then ok "--keep 3: three images left, the kept instants restore exactly"
else ko "--keep 3"; fi

# a missing parent, a parent that is another image
D="$T/anon"
mv "$D/ckpt-000001.wpsnap" "$D/away"
if "$W" chain "$D/ckpt-000003.wpsnap" >"$T/out" 2>&1; then ko "missing parent refused"
elif grep -q "ckpt-000002.wpsnap: its parent .*ckpt-000001.wpsnap is missing" "$T/out"
then ok "missing parent: clear error"; else ko "missing parent: message"; fi
cp "$T/memfd/ckpt-000001.wpsnap" "$D/ckpt-000001.wpsnap"
if "$W" chain "$D/ckpt-000003.wpsnap" >"$T/out" 2>&1; then ko "mismatched parent refused"
elif grep -q "its parent must be image" "$T/out"
then ok "mismatched parent: clear error"; else ko "mismatched parent: message"; fi

tap_end
