#!/usr/bin/env bash
# Train the learned baselines to convergence, then predict and score the whole ID and OOD
# sets, in slices that fit short GPU sessions. Run it again until it prints "all done":
#
#   bash benchmarks/train_baselines.sh STORE OUT "cdvae:1 cdvae:2"
#
# Each call does the first unfinished phase for every (model, task, seed) of PLAN x SEEDS:
#   1. train: `c2np train --resume --budget BUDGET` (continues from last.ckpt; a converged
#      or stopped run is left as is), PER_GPU runs on each of the GPUs at once;
#   2. predict: best.ckpt on the whole ID and OOD splits (Task 1: every particle
#      generated), one split per GPU slot; also writes the Loss column (test_loss-*.json);
#   3. score: `c2np evaluate -j JOBS --run-info` into OUT/results, then the report.
# Everything lands in OUT (runs/, preds/, results/, logs/); carry OUT between calls.
set -uo pipefail
STORE=${1:?store}; OUT=${2:?out}; PLAN=${3:-"cdvae:1 cdvae:2"}
SEEDS=${SEEDS:-"0 1 2"}; BUDGET=${BUDGET:-480}; PER_GPU=${PER_GPU:-2}; JOBS=${JOBS:-$(nproc)}
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}; [ "$GPUS" -ge 1 ] || GPUS=1; FIRST_GPU=${FIRST_GPU:-0}
C2NP=${C2NP:-c2np}
DEADLINE=${DEADLINE:-0}  # epoch seconds at which every command is stopped (0: never)
limit() { [ "$DEADLINE" -gt 0 ] || { echo 0; return; }; local s=$((DEADLINE - $(date +%s))); echo $((s > 1 ? s : 1)); }
mkdir -p "$OUT/runs" "$OUT/preds" "$OUT/results" "$OUT/logs"

jobs_list() { for item in $PLAN; do for s in $SEEDS; do echo "${item%%:*} ${item##*:} $s"; done; done; }
finished() {  # model task seed -> 0 when run.json says it stopped for good
    python3 - "$OUT/runs/$1-task$2-seed$3/run.json" <<'PY'
import json, sys
try:
    info = json.load(open(sys.argv[1]))
except OSError:
    sys.exit(1)
sys.exit(0 if info.get("stop_reason") in ("converged", "max_epochs", "max_time") else 1)
PY
}
slot=0
launch() {  # run "$@" on the next GPU slot, at most GPUS * PER_GPU at once
    CUDA_VISIBLE_DEVICES=$((FIRST_GPU + slot % GPUS)) timeout "$(limit)" "$@" < /dev/null &
    slot=$((slot + 1))
    if [ $((slot % (GPUS * PER_GPU))) -eq 0 ]; then wait; fi
}

todo=0
while read -r m t s; do
    finished "$m" "$t" "$s" && continue
    todo=$((todo + 1))
    launch $C2NP train --task "$t" --model "$m" --seed "$s" --store "$STORE" --out "$OUT/runs" -q \
        --resume --budget "$BUDGET" >> "$OUT/logs/train-$m-t$t-s$s.log" 2>&1
done < <(jobs_list)
wait
if [ "$todo" -gt 0 ]; then
    echo "trained $todo run(s) for up to ${BUDGET}s each; call again to continue"
    python3 - "$OUT"/runs/*/run.json <<'PY'
import json, sys
for path in sys.argv[1:]:
    i = json.load(open(path))
    print(f"{i['model']} task {i['task']} seed {i['seed']}: epoch {i['epochs']}, {i['stop_reason']}, "
          f"best validation loss {i['best_val_loss']:.4g} (epoch {i['best_epoch']})")
PY
    exit 0
fi

todo=0
while read -r m t s; do
    for split in id ood; do
        p="$OUT/preds/$m-task$t-$split-seed$s.parquet"
        [ -s "$p" ] && continue
        todo=$((todo + 1))
        launch $C2NP predict --checkpoint "$OUT/runs/$m-task$t-seed$s/best.ckpt" --split "$split" \
            --store "$STORE" --seed "$s" --out "$p" -q >> "$OUT/logs/predict-$m-t$t-$split-s$s.log" 2>&1
    done
done < <(jobs_list)
wait
if [ "$todo" -gt 0 ]; then echo "predicted $todo split(s); call again to score"; exit 0; fi

while read -r m t s; do
    for split in id ood; do
        r="$OUT/results/$m-task$t-$split-seed$s.json"
        [ -s "$r" ] && continue
        timeout "$(limit)" $C2NP evaluate --task "$t" --split "$split" --predictions "$OUT/preds/$m-task$t-$split-seed$s.parquet" \
            --store "$STORE" -q -j "$JOBS" --run-info "$OUT/runs/$m-task$t-seed$s/run.json" --out "$r" \
            >> "$OUT/logs/eval-$m-t$t-$split-s$s.log" 2>&1 || echo "scoring failed: see $OUT/logs"
    done
done < <(jobs_list)
$C2NP report "$OUT"/results/*.json --out "$OUT/report" > /dev/null && echo "all done: $OUT/report/report.md"
