#!/usr/bin/env bash
# Train, predict and score the learned baselines for seeds 0-2:
#
#   bash benchmarks/train_baselines.sh STORE OUT "cdvae:2 symat:2 cdvae:1 symat:1"
#
# The three seeds of a (model, task) train at the same time on one GPU and share it;
# the time per epoch in the results includes that sharing. Each fit stops after
# T2_SECONDS / T1_SECONDS of wall time (recorded as max_time_s in every result). Task 1
# is generated and scored on SAMPLE seeded random materials per radius.
set -uo pipefail
STORE=${1:?store}; OUT=${2:?out}; PLAN=${3:-"cdvae:2 symat:2 cdvae:1 symat:1"}
T2=${T2_SECONDS:-45}; T1=${T1_SECONDS:-60}; SAMPLE=${SAMPLE:-20}; JOBS=${JOBS:-2}
C2NP=${C2NP:-c2np}
mkdir -p "$OUT/runs" "$OUT/preds" "$OUT/results" "$OUT/logs"

fit() {  # model task seconds
    for s in 0 1 2; do
        $C2NP train --task "$2" --model "$1" --seed "$s" --store "$STORE" --out "$OUT/runs" -q \
            --set train.max_time_s="$3" --set train.epochs=1000 > "$OUT/logs/train-$1-t$2-s$s.log" 2>&1 &
    done
    wait
}

predict_and_score() {  # model task seed split [sample]
    local p="$OUT/preds/$1-task$2-$4-seed$3.parquet" tag="$1-t$2-$4-s$3"
    $C2NP predict --checkpoint "$OUT/runs/$1-task$2-seed$3/last.ckpt" --split "$4" --store "$STORE" \
        --out "$p" --seed "$3" ${5:+--sample $5} -q > "$OUT/logs/predict-$tag.log" 2>&1 &&
    $C2NP evaluate --task "$2" --split "$4" --predictions "$p" --store "$STORE" -q -j "$JOBS" \
        ${5:+--sample $5} --run-info "$OUT/runs/$1-task$2-seed$3/run.json" \
        --out "$OUT/results/$1-task$2-$4-seed$3.json" > "$OUT/logs/eval-$tag.log" 2>&1
}

for item in $PLAN; do
    m=${item%%:*}; t=${item##*:}
    if [ "$t" = 2 ]; then fit "$m" 2 "$T2"; else fit "$m" 1 "$T1"; fi
    for s in 0 1 2; do for split in id ood; do
        if [ "$t" = 2 ]; then predict_and_score "$m" 2 "$s" "$split" &
        else predict_and_score "$m" 1 "$s" "$split" "$SAMPLE" & fi
    done; done
    [ "$t" = 2 ] && wait  # Task 1 scoring overlaps with the next fit; Task 2 is quick
done
wait
ls "$OUT/results"
