#!/usr/bin/env bash
# Bundle work folders of gpu-work/ into one file for the trip to a lent GPU machine, whose
# calls carry at most 8 paths and about 64 MiB: gpu-work/carry-N.tar, which
# benchmarks/table5_gpu.sh unpacks into gpu-work/ before its runners start. A bundle over
# BUNDLE_MIB is split into gpu-work/carry-N.tar.part-K-of-M, one call each.
# What a runner no longer needs stays home: the checkpoints and predictions of the runs its
# scored.txt lists (scored on every split), the batches of finished predictions, the
# last.ckpt of a run that stopped for good (its predictions need best.ckpt alone), and its
# best.ckpt where the repository holds the same file (results/learned/.../runs/NAME/), which
# table5_seed.py copies in on the machine.
#
#   bash benchmarks/table5_bundle.sh N FOLDER...     (from the repository root; FOLDER = t6b ...)
#   BUNDLE_ZSTD=1 bash benchmarks/table5_bundle.sh N FOLDER...   (gpu-work/carry-N.tar.zst; below)
#
# A new runner's folder needs a file in it (an empty folder is not carried): the bundle
# creates FOLDER with a README.txt when gpu-work/FOLDER does not exist yet.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/table5_lib.sh"
N=${1:?bundle number}; shift
[ $# -gt 0 ] || { echo "name at least one folder of gpu-work/" >&2; exit 2; }
out=gpu-work/carry-$N.tar
# one build per bundle number: an older build's file or parts (either format) left beside it
# could be carried by mistake
rm -f "$out" "$out".part-* "$out.zst" "$out".zst.part-*
excl=()
for f in "$@"; do
    w=gpu-work/$f
    if [ ! -d "$w" ]; then
        mkdir -p "$w" && echo "work folder of a new train_baselines.py runner" > "$w/README.txt"
    fi
    needless_excludes gpu-work "$f" "" stopped
    # a converged run's best.ckpt committed as the same file: table5_seed.py puts the
    # checkout's copy into the carried run folder on the machine
    for r in "$w"/runs/*/; do
        [ -f "$r/best.ckpt" ] && stopped_for_good "$r" || continue
        for c in results/learned/{pending/,materials/,materials/pending/,}runs/"$(basename "$r")"/best.ckpt; do
            if [ -f "$c" ] && cmp -s "$c" "$r/best.ckpt"; then
                excl+=(--exclude="$f/runs/$(basename "$r")/best.ckpt"); break
            fi
        done
    done
done
tar cf "$out" "${excl[@]}" -C gpu-work "$@"
# BUNDLE_ZSTD=1 compresses the bundle (gpu-work/carry-N.tar.zst). Long-range matching over a
# 128 MiB window finds the bytes that a run's best.ckpt and last.ckpt share, such as ADiT
# Task 1's untrained DiT during its VAE stage (29 of a run's 164 MB): ADiT Task 1's four runs
# went from 624 to 434 MiB (s22, zstd -3). 128 MiB is the most a zstd decoder accepts
# by default, so the GPU machine decodes it with its zstd or, lacking one, with pyarrow.
if [ "${BUNDLE_ZSTD:-0}" = 1 ]; then
    command -v zstd > /dev/null || { echo "BUNDLE_ZSTD=1 needs the zstd command" >&2; exit 2; }
    raw=$(stat -c %s "$out")
    zstd -q --rm --long=27 -3 -T0 "$out" -o "$out.zst"
    out=$out.zst
    echo "$out: $(( $(stat -c %s "$out") >> 20 )) MiB (zstd, from $((raw >> 20)) MiB)"
else
    echo "$out: $(( $(stat -c %s "$out") >> 20 )) MiB"
fi
# A call carries 64 MiB together with the checkout's tracked files, which travel in every call:
# a larger bundle goes in parts of what they leave less 2 MiB (BUNDLE_MIB overrides it), one
# call each; table5_gpu.sh unpacks it once every part is there. A fixed 55 MiB, the default
# until s17, no longer fitted once committed checkpoints made the tracked files 29 MiB.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if git -C "$repo" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    tracked=$( (cd "$repo" && git ls-files -z | xargs -0 -r stat -c %s 2> /dev/null || true) \
        | awk '{s += $1} END {print int(s / 1048576) + 1}')
    limit=${BUNDLE_MIB:-$((62 - tracked))}
else
    limit=${BUNDLE_MIB:-30}  # not a git checkout: what travels is unknown, so leave room
    tracked="unknown"
fi
if [ "$(stat -c %s "$out")" -gt $((limit << 20)) ]; then
    split -b "${limit}M" -d -a 3 "$out" "$out.piece-"
    m=$(compgen -G "$out.piece-*" | wc -l); k=0
    for piece in $(compgen -G "$out.piece-*" | sort); do
        k=$((k + 1)); mv "$piece" "$out.part-$k-of-$m"
    done
    rm "$out"
    echo "  in $m parts of at most $limit MiB (tracked files: $tracked MiB of a call's 64), one call each:\
 $(cd gpu-work && ls "$(basename "$out")".part-* | sort -t- -k3 -n | tr '\n' ' ')"
fi
