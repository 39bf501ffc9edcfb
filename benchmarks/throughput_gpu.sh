#!/usr/bin/env bash
# The measurements behind the README's throughput numbers, in one GPU call:
#
#   bash benchmarks/throughput_gpu.sh STORE OUT
#
# BEFORE_SRC=OLD/src first times the earlier code's base variant (up to 2 minutes more: with
# it, pass TP_ARGS="--models cdvae:1,symat:2" to stay inside a 9-minute call). Then
# the variant table of benchmarks/train_throughput.py (CDVAE Task 1, SyMat Task 2,
# CDVAE Task 2; its default variants: before, base, torch.compile of the interactions
# (edges), edges + fused Adam; at most 8 minutes, compilation included: each compile
# variant is cut at 120 s), bounded by its own timeout. Then, only when asked (they were
# measured before and take minutes each): DDP=1, `c2np train --devices 1` vs `--devices 2`
# (same effective batch: loss curves and time per epoch); SHARED=1, three seeds sharing
# one GPU. C2NP (default: c2np) runs the CLI; DDP_EPOCHS / LIMIT shrink them.
# A CPU check of the whole script: python benchmarks/train_throughput.py --cpu-dry-run.
set -uo pipefail
STORE=${1:?store}; OUT=${2:?out}
HERE=$(cd "$(dirname "$0")/.." && pwd); C2NP=${C2NP:-c2np}
DDP_EPOCHS=${DDP_EPOCHS:-6}; LIMIT=${LIMIT:-0}; T1=${T1:-1}
export PYTHONUNBUFFERED=1 PYTHONPATH=$HERE/src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
log() { tee -a "$OUT/throughput.log"; }
(nvidia-smi -L || echo cpu) | log
if [ -n "${BEFORE_SRC:-}" ]; then  # the earlier code's base variant (git archive 7a18657 src)
    PYTHONPATH=$BEFORE_SRC timeout $((120 * T1)) python "$HERE/benchmarks/train_throughput.py" --store "$STORE" \
        --limit "$LIMIT" --label before --variants base --json "$OUT/throughput-before.jsonl" 2>&1 | log
fi
timeout $((480 * T1)) python "$HERE/benchmarks/train_throughput.py" --store "$STORE" --limit "$LIMIT" \
    --json "$OUT/throughput.jsonl" ${TP_ARGS:-} 2>&1 | log

if [ -n "${DDP:-}" ]; then
    TRAIN="$C2NP train --store $STORE -q --set train.epochs=$DDP_EPOCHS --set train.patience=1000"
    [ "$LIMIT" != 0 ] && TRAIN="$TRAIN --set train.limit=$LIMIT"
    for task in ${DDP_TASKS:-2 1}; do
        for n in 1 2; do
            timeout $((80 * T1)) $TRAIN --task "$task" --model cdvae --devices $n \
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
fi

if [ -n "${SHARED:-}" ]; then
    for s in 0 1 2; do  # three seeds on one GPU at once
        CUDA_VISIBLE_DEVICES=0 timeout $((120 * T1)) python "$HERE/benchmarks/train_throughput.py" --store "$STORE" \
            --label "shared3-seed$s" --models cdvae:1 --variants base > "$OUT/shared-$s.log" 2>&1 &
    done
    wait
    grep -h "| cdvae" "$OUT"/shared-*.log | log
fi
