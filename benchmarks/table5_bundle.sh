#!/usr/bin/env bash
# Bundle work folders of gpu-work/ into one file for the trip to a lent GPU machine, whose
# calls carry at most 8 paths and about 64 MiB: gpu-work/carry-N.tar, which
# benchmarks/table5_gpu.sh unpacks into gpu-work/ before its runners start. A bundle over
# BUNDLE_MIB (default 55) is split into gpu-work/carry-N.tar.part-K-of-M, one call each.
# What a runner no longer needs stays home: the checkpoints and predictions of the runs its
# scored.txt lists (scored on every split), the batches of finished predictions, and the
# last.ckpt of a run that stopped for good (its predictions need best.ckpt alone).
#
#   bash benchmarks/table5_bundle.sh N FOLDER...     (from the repository root; FOLDER = t6b ...)
#
# A new runner's folder needs a file in it (an empty folder is not carried): the bundle
# creates FOLDER with a README.txt when gpu-work/FOLDER does not exist yet.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/table5_lib.sh"
N=${1:?bundle number}; shift
[ $# -gt 0 ] || { echo "name at least one folder of gpu-work/" >&2; exit 2; }
out=gpu-work/carry-$N.tar
excl=()
for f in "$@"; do
    w=gpu-work/$f
    if [ ! -d "$w" ]; then
        mkdir -p "$w" && echo "work folder of a new train_baselines.py runner" > "$w/README.txt"
    fi
    needless_excludes gpu-work "$f" "" stopped
done
tar cf "$out" "${excl[@]}" -C gpu-work "$@"
echo "$out: $(( $(stat -c %s "$out") >> 20 )) MiB"
# A call carries about 64 MiB with the tracked files: a larger bundle goes in parts of
# BUNDLE_MIB (default 55), one call each; table5_gpu.sh unpacks it once every part is there.
limit=${BUNDLE_MIB:-55}
if [ "$(stat -c %s "$out")" -gt $((limit << 20)) ]; then
    rm -f "$out".part-*
    split -b "${limit}M" -d -a 3 "$out" "$out.piece-"
    m=$(compgen -G "$out.piece-*" | wc -l); k=0
    for piece in $(compgen -G "$out.piece-*" | sort); do
        k=$((k + 1)); mv "$piece" "$out.part-$k-of-$m"
    done
    rm "$out"
    echo "  in $m parts, one call each: $(cd gpu-work && ls carry-"$N".tar.part-* | sort -t- -k3 -n | tr '\n' ' ')"
fi
