#!/usr/bin/env bash
# Short GPU runs of model families: does the loss go down, and what is a first ID score?
#
#   bash benchmarks/short_runs.sh STORE OUT "diffcsp:1 flowmm:1 mattergen:2"
#
# For every model:task of the list, in its own GPU slot (PER_GPU runs per GPU at once):
#   1. `c2np train --resume --budget TRAIN_S` (seed SEED): a pause, not convergence; the run
#      can go on later with the same command, or under benchmarks/train_baselines.py;
#   2. `c2np predict` with best.ckpt on the ID split (Task 1: SAMPLE seeded materials per
#      ID radius; Task 2: every (material, R) of the split, as always);
#   3. `c2np evaluate --run-info` into OUT/results/MODEL-taskT-id-seedS.json (marked as a
#      sample for Task 1).
# A model whose result JSON exists is skipped, and one with run.json and best.ckpt is not
# trained again, so a second call only does what is missing.
# At the end it prints a Markdown table (benchmarks/short_runs_table.py): epochs, time per
# epoch (with PER_GPU runs sharing a GPU), the validation loss of the first and the best
# epoch, the Loss column on the ID split and the first ID scores.
# Logs: OUT/logs/short-MODEL-tT.log. GPUS/PER_GPU/FIRST_GPU pick the slots; TRAIN_ARGS adds
# options to `c2np train` (a CPU dry run: TRAIN_ARGS="--set train.limit=4").
set -uo pipefail
STORE=${1:?store}; OUT=${2:?out}; PLAN=${3:?"model:task list"}
TRAIN_S=${TRAIN_S:-240}; SAMPLE=${SAMPLE:-5}; SEED=${SEED:-0}; PER_GPU=${PER_GPU:-2}
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}; [ "$GPUS" -ge 1 ] || GPUS=1; FIRST_GPU=${FIRST_GPU:-0}
JOBS=${JOBS:-4}; C2NP=${C2NP:-c2np}; read -r -a EXTRA <<< "${TRAIN_ARGS:-}"  # e.g. "--set train.limit=4"
DEADLINE=${DEADLINE:-0}  # epoch seconds at which every command is stopped (0: never)
SCORE_S=${SCORE_S:-0}    # most seconds for one scoring (0: up to the deadline); the predictions stay for later
limit() { [ "$DEADLINE" -gt 0 ] || { echo 0; return; }; local s=$((DEADLINE - $(date +%s))); echo $((s > 1 ? s : 1)); }
mkdir -p "$OUT/runs" "$OUT/preds" "$OUT/results" "$OUT/logs"

one() {  # model task: train, predict, score; everything into the model's log
    local m=$1 t=$2 run="$OUT/runs/$1-task$2-seed$SEED" ext sample=()
    local res="$OUT/results/$m-task$t-id-seed$SEED.json"
    [ -s "$res" ] && return 0
    [ "$t" = 1 ] && { ext=parquet; sample=(--sample "$SAMPLE"); } || ext=csv
    local pred="$OUT/preds/$m-task$t-id-seed$SEED.$ext"
    # trained once already (run.json and best.ckpt): only predict and score what is missing
    if [ ! -s "$run/run.json" ] || [ ! -e "$run/best.ckpt" ]; then
        timeout "$(limit)" $C2NP train --task "$t" --model "$m" --seed "$SEED" --store "$STORE" --out "$OUT/runs" -q \
            --resume --budget "$TRAIN_S" "${EXTRA[@]}" || return 1
    fi
    timeout "$(limit)" $C2NP predict --checkpoint "$run/best.ckpt" --split id --store "$STORE" --seed "$SEED" \
        "${sample[@]}" --out "$pred" -q || return 1
    local cap; cap=$(limit); [ "$SCORE_S" -gt 0 ] && { [ "$cap" = 0 ] || [ "$cap" -gt "$SCORE_S" ]; } && cap=$SCORE_S
    timeout "$cap" $C2NP evaluate --task "$t" --split id --predictions "$pred" --store "$STORE" "${sample[@]}" \
        -j "$JOBS" -q --run-info "$run/run.json" --out "$res"
}

slot=0
for item in $PLAN; do
    m=${item%%:*}; t=${item##*:}
    CUDA_VISIBLE_DEVICES=$((FIRST_GPU + slot % GPUS)) one "$m" "$t" \
        > "$OUT/logs/short-$m-t$t.log" 2>&1 < /dev/null &
    slot=$((slot + 1))
    if [ $((slot % (GPUS * PER_GPU))) -eq 0 ]; then wait; fi
done
wait

python3 "$(dirname "$0")/short_runs_table.py" "$OUT"
