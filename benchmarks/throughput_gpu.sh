#!/usr/bin/env bash
# The measurements behind the README's throughput numbers, in one call on a 2-GPU machine:
#
#   bash benchmarks/throughput_gpu.sh STORE BEFORE_SRC OUT
#
# BEFORE_SRC is the src/ of the earlier code (git archive b4f3555 src). In order:
# single-GPU throughput before/after (fp32, bf16, torch.compile) with generation speed,
# `c2np train --devices 1` vs `--devices 2` (DDP, same effective batch: loss curves and
# time per epoch), and three seeds sharing one GPU. Every step has its own timeout.
# C2NP (default: c2np) runs the CLI; EPOCHS / DDP_EPOCHS / LIMIT shrink it for a CPU dry run.
set -uo pipefail
STORE=${1:?store}; BEFORE=${2:?before src}; OUT=${3:?out}
HERE=$(cd "$(dirname "$0")/.." && pwd); C2NP=${C2NP:-c2np}
EPOCHS=${EPOCHS:-2}; DDP_EPOCHS=${DDP_EPOCHS:-6}; LIMIT=${LIMIT:-0}; T1=${T1:-1}; GEN=${GEN:-10,20,30}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
AFTER=$HERE/src${PYTHONPATH:+:$PYTHONPATH}; OLD=$BEFORE${PYTHONPATH:+:$PYTHONPATH}
TP="python $HERE/benchmarks/train_throughput.py --store $STORE --json $OUT/throughput.jsonl --epochs $EPOCHS --limit $LIMIT --gen-radii $GEN"
log() { tee -a "$OUT/throughput.log"; }
(nvidia-smi -L || echo cpu) | log
[ -z "${SKIP_BEFORE:-}" ] && PYTHONPATH=$OLD timeout $((140 * T1)) $TP --label before --no-bucket --workers 0 2>&1 | log
PYTHONPATH=$AFTER timeout $((200 * T1)) $TP --label after --variants 32,bf16,32+compile 2>&1 | log

TRAIN="$C2NP train --store $STORE -q --set train.epochs=$DDP_EPOCHS --set train.patience=1000"
[ "$LIMIT" != 0 ] && TRAIN="$TRAIN --set train.limit=$LIMIT"
for task in ${DDP_TASKS:-2 1}; do
    for n in 1 2; do
        PYTHONPATH=$AFTER timeout $((80 * T1)) $TRAIN --task $task --model cdvae --devices $n \
            --out "$OUT/ddp$n" 2>&1 | grep -v "^\[rank" >> "$OUT/ddp.log"
    done
done
python - "$OUT" <<'PY' 2>&1 | tee -a "$OUT/ddp.log"
import csv, glob, json, sys
for r in sorted(glob.glob(f"{sys.argv[1]}/ddp*/cdvae-task*-seed0")):
    rows = list(csv.DictReader(open(f"{r}/metrics.csv")))
    info = json.load(open(f"{r}/run.json")) if glob.glob(f"{r}/run.json") else {}
    print(f"{r}: s/epoch {info.get('time_per_epoch', float('nan')):.3f}, "
          f"epoch s {[float(x['epoch_s']) for x in rows]}, "
          f"val_loss {[round(float(x['val_loss']), 4) for x in rows]}, "
          f"train_loss {[round(float(x['train_loss']), 4) for x in rows]}")
PY

[ -n "${SKIP_SHARED:-}" ] && exit 0
for s in 0 1 2; do  # three seeds on one GPU at once
    CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$AFTER timeout $((55 * T1)) $TP --label shared3-seed$s --models cdvae:1 \
        --gen-radii "" > "$OUT/shared-$s.log" 2>&1 &
done
wait
grep -h "| shared3" "$OUT"/shared-*.log | log
