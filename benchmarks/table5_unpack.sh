#!/usr/bin/env bash
# Unpack what benchmarks/table5_gpu.sh returned into gpu-work/ (every runner's work folder:
# runs, results, logs, status.md; the runners' console logs; dmon.txt; left-out.txt) and print
# every runner's status table. Files of the same name are overwritten by the newer ones.
#
#   bash benchmarks/table5_unpack.sh FOLDER
set -euo pipefail
IN=${1:?folder with 1-small.tgz (or its parts) and the *.tgz.part-* files}
mkdir -p gpu-work
if [ -f "$IN/1-small.tgz" ]; then tar xzf "$IN/1-small.tgz" -C gpu-work
else cat "$IN/1-small.tgz.part-"* | tar xzf - -C gpu-work; fi
for tier in 2-ckpt-task2 3-ckpt-task1 4-preds; do
    compgen -G "$IN/$tier.tgz.part-*" > /dev/null || continue
    cat "$IN/$tier.tgz.part-"* | tar xzf - -C gpu-work
done
for s in gpu-work/*/status.md; do echo "== $(dirname "$s")"; cat "$s"; done
if [ -s gpu-work/left-out.txt ]; then echo "not returned (still on the GPU machine):"; cat gpu-work/left-out.txt; fi
