#!/usr/bin/env bash
# Unpack what benchmarks/table5_gpu.sh returned into gpu-work/ (every runner's work folder:
# runs, results, logs, status.md; the runners' console logs; dmon.txt; left-out.txt) and print
# every runner's status table. Files of the same name are overwritten by the newer ones; the
# call's console logs and dmon.txt are also kept in gpu-work/calls/FOLDER.
#
#   bash benchmarks/table5_unpack.sh FOLDER
#   bash benchmarks/table5_unpack.sh --return FOLDER...   (the folders of table5_return.sh's calls)
#
# --return checks each part against the checksums its packing recorded (return-sums.txt) and
# refuses, writing nothing, a folder of another packing: the device tool's folders of an
# earlier session hold parts of the same names.
#
# Unpack every training call's FOLDER, in the order of the calls: a file that one call brought
# home is not sent again while it stays unchanged (table5_pack.sh), so a later call's folder
# alone can lack it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/table5_lib.sh"
if [ "${1:-}" = --return ]; then
    shift
    [ $# -gt 0 ] || { echo "name the folders the return calls came back in" >&2; exit 2; }
    n=
    for d in "$@"; do [ -f "$d/return-parts.txt" ] && n=$(cat "$d/return-parts.txt"); done
    [ -n "$n" ] || { echo "no return-parts.txt in $*: not the folders of table5_return.sh calls" >&2; exit 2; }
    # Every call of one packing carries the same return-sums.txt (returns made before it existed
    # have none). A folder whose list differs, or that has none beside folders that do, holds
    # parts of another packing under the same names: refuse rather than splice them in.
    sums=; others=()
    for d in "$@"; do [ -f "$d/return-sums.txt" ] && { sums=$d/return-sums.txt; break; }; done
    if [ -n "$sums" ]; then
        for d in "$@"; do cmp -s "$sums" "$d/return-sums.txt" 2> /dev/null || others+=("$d"); done
        if [ ${#others[@]} -gt 0 ]; then
            echo "${others[*]}: from another packing than $(dirname "$sums") (return-sums.txt differs or is" \
                 "missing); pass only the folders of one session's table5_return.sh calls" >&2
            exit 2
        fi
        n=$(wc -l < "$sums")
    fi
    parts=()
    for i in $(seq 0 $((n - 1))); do
        p=; name=return.tar.part-$(printf %03d "$i")
        for d in "$@"; do
            [ -f "$d/$name" ] && p=$d/$name
        done
        [ -n "$p" ] || { echo "part $((i + 1)) of $n is missing: call table5_return.sh with K=$((i / 4))" >&2; exit 2; }
        if [ -n "$sums" ] && ! grep -qxF "$(sha256sum < "$p" | cut -d' ' -f1)  $name" "$sums"; then
            echo "part $((i + 1)) of $n ($p) does not match the checksum its packing recorded: call" \
                 "table5_return.sh with K=$((i / 4)) again" >&2
            exit 2
        fi
        parts+=("$p")
    done
    mkdir -p gpu-work
    cat "${parts[@]}" | tar xf - -C gpu-work
    echo "unpacked all $n return parts into gpu-work/"
    exit 0
fi
IN=${1:?folder with 1-small.tgz (or its parts) and the *.tgz.part-* files}
mkdir -p gpu-work
if [ -f "$IN/1-small.tgz" ]; then tar xzf "$IN/1-small.tgz" -C gpu-work
else cat "$IN/1-small.tgz.part-"* | tar xzf - -C gpu-work; fi
for tier in 2-ckpt-final 2-ckpt-task2 3-ckpt-task1 4-preds; do
    compgen -G "$IN/$tier.tgz.part-*" > /dev/null || continue
    cat "$IN/$tier.tgz.part-"* | tar xzf - -C gpu-work
done
# The runners' console logs and dmon.txt have the same names at every call: a copy of this
# call's stays in gpu-work/calls/FOLDER (FOLDER's name, e.g. the device folder's number).
# The device folders' numbers start again every session: an older session's call N is cleared.
keep=gpu-work/calls/$(basename "$IN")
rm -rf "$keep" && mkdir -p "$keep"
for f in gpu-work/dmon.txt gpu-work/gpus.txt gpu-work/layout.txt gpu-work/left-out.txt; do
    [ -f "$f" ] && cp "$f" "$keep/"
done
# Only the console logs of this call's runners: gpu-work/ also holds older sessions' logs of
# runners that this call's layout no longer has.
for w in $(grep -v '^[[:space:]]*#' gpu-work/layout.txt 2>/dev/null | cut -d'|' -f1); do
    [ -f "gpu-work/$w.log" ] && cp "gpu-work/$w.log" "$keep/"
done
echo "this call's logs: $keep"
[ -f "$keep/dmon.txt" ] && sm_means "$keep/dmon.txt"
for s in gpu-work/*/status.md; do echo "== $(dirname "$s")"; cat "$s"; done
if [ -s gpu-work/left-out.txt ]; then
    echo "not returned (still on the GPU machine):"; sed 's/^/  left: /' gpu-work/left-out.txt
    echo "NOT RETURNED: $(wc -l < gpu-work/left-out.txt) files stayed on the GPU machine (gpu-work/left-out.txt);" \
         "if it is gone, so are they"
fi
