#!/usr/bin/env bash
# Bring everything a session's runners still need home from a lent GPU machine, over as many
# short calls as it takes (a call returns at most 8 files and about 64 MiB; the machine's /tmp
# survives between calls while it is kept warm). Run it after the last training call:
#
#   bash benchmarks/table5_return.sh OUT 0     # call 1: packs W once, returns parts 1-4
#   bash benchmarks/table5_return.sh OUT 1     # call 2: parts 5-8, and so on
#
# Each call prints how many parts there are and which call brings the last one. The parts are
# 15 MiB pieces of one tar of W (default /tmp/gw): everything but the stores, the checkpoints
# and predictions of scored runs and the batches of finished predictions, and the
# checkpoints of a run that stopped for good but best.ckpt, and the files a training call's
# pack brought home that have not changed since (PACK_RESEND=1 sends them too; unpack every
# training call first). At home, once every part is there
# (after unpacking the training calls' packs, so that the newest files win):
#
#   bash benchmarks/table5_unpack.sh --return CALL1 CALL2 ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/table5_lib.sh"
OUT=${1:?out folder}; K=${2:?call number, from 0}; W=${3:-/tmp/gw}
R=$W.return
mkdir -p "$OUT"
if [ "$K" -eq 0 ] || [ ! -f "$R/parts.txt" ]; then
    rm -rf "$R" && mkdir -p "$R"
    excl=(--exclude=./stores)
    for w in "$W"/*/; do
        needless_excludes "$W" "$(basename "$w")" ./ stopped
    done
    # what a training call's pack brought home and has not changed since (W/returned.txt,
    # table5_pack.sh) stays, unless PACK_RESEND=1
    same=0
    if [ "${PACK_RESEND:-0}" != 1 ]; then
        while read -r f; do excl+=(--exclude="./$f"); same=$((same + 1)); done < <(returned_unchanged "$W")
    fi
    tar cf - -C "$W" "${excl[@]}" . | split -b 15M -d -a 3 - "$R/return.tar.part-"
    ls "$R" | grep -c '^return.tar.part-' > "$R/parts.txt"
    # lets the unpacking at home tell this packing's parts from another's of the same names
    # (an earlier session's return folders) and from a damaged copy
    (cd "$R" && sha256sum return.tar.part-* > sums.txt)
    if [ "$same" -gt 0 ]; then
        echo "return: $same files stay, unchanged since a training call brought them home"
    fi
fi
n=$(cat "$R/parts.txt")
cp "$R/parts.txt" "$OUT/return-parts.txt"  # lets the unpacking at home check that none is missing
cp "$R/sums.txt" "$OUT/return-sums.txt"
first=$((K * 4)); last=$((first + 3)); [ "$last" -ge "$n" ] && last=$((n - 1))
for i in $(seq "$first" "$last"); do
    cp "$R/return.tar.part-$(printf %03d "$i")" "$OUT/"
done
if [ "$first" -ge "$n" ]; then
    echo "return: $n parts of 15 MiB, all returned by earlier calls (K < $K)"
else
    echo "return: $n parts of 15 MiB; this call (K=$K) returns parts $((first + 1))-$((last + 1));" \
         "the last part comes with K=$(( (n - 1) / 4 ))"
fi
