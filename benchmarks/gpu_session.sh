#!/usr/bin/env bash
# The GPU work behind the README's learned-model numbers, on one machine with two GPUs, in
# calls of at most 10 minutes (the lent machines' limit). Call it again and again with the
# same W until it prints "session complete"; W holds the runs, and every call copies the
# small results and logs into OUT (a few MB, tarred).
#
#   bash benchmarks/gpu_session.sh STORE W OUT SECONDS
#
# A lent machine may start bare at every call, even a minute after the last: carry W
# (checkpoints included) into every call. OUT/cdvae-ckpt.tgz.part-* hold the CDVAE runs; a
# short run without its best.ckpt is trained again.
#
# GPU 0: CDVAE Task 1 and Task 2, seed 0, trained to the convergence rule, then the whole
#        ID and OOD sets predicted and scored (benchmarks/train_baselines.py).
# GPU 1: short runs of DiffCSP, FlowMM, MatterGen and ADiT on both tasks
#        (benchmarks/short_runs.sh), then their time per epoch with the GPU to themselves
#        (train_throughput.py).
set -uo pipefail
STORE=${1:?store}; W=${2:?work dir}; OUT=${3:?out}; SECONDS_GIVEN=${4:?seconds}
HERE=$(cd "$(dirname "$0")" && pwd)
export DEADLINE=$(($(date +%s) + SECONDS_GIVEN - 30))  # every command stops by then; 30 s to pack
left() { echo $((DEADLINE - $(date +%s))); }
mkdir -p "$W" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$W/gpus.txt"
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

drive() {  # PLAN: train_baselines.py pipelines on GPU 0, two at once, until done or the time is up
    local w="$W/${1//[: ]/}"
    python3 "$HERE/train_baselines.py" --store "$STORE" --work "$w" --plan "$1" --seeds 0 --gpus 1 \
        --first-gpu 0 --per-gpu 2 --jobs 12 --deadline "$(left)" --reserve 0 2>&1 | tee -a "$W/base.log" \
        | grep "all done" > /dev/null && echo "$1 done" >> "$W/base.log"
}

gpu0() {  # each task on its own, so that a converged Task 2 is scored while Task 1 trains
    drive cdvae:2 & drive cdvae:1 & wait
    grep -q "cdvae:2 done" "$W/base.log" && grep -q "cdvae:1 done" "$W/base.log" && echo "gpu0 done" >> "$W/base.log"
}

gpu1_step() {  # NEEDS_S NAME COMMAND...: run when NEEDS_S seconds are left, skip if done
    local need=$1 name=$2; shift 2
    [ -e "$W/done-$name" ] && return 0
    [ "$(left)" -lt "$need" ] && { echo "$name: $(left) s left, needs $need; next call" >> "$W/gpu1.log"; return 1; }
    echo "== $name ($(date +%T))" >> "$W/gpu1.log"
    timeout "$(left)" "$@" >> "$W/gpu1.log" 2>&1 && touch "$W/done-$name"
}

gpu1() {
    local short="bash $HERE/short_runs.sh $STORE $W/short"
    local tp="env CUDA_VISIBLE_DEVICES=1 python3 $HERE/train_throughput.py --store $STORE --gpu 1"
    FIRST_GPU=1 GPUS=1 PER_GPU=3 TRAIN_S=240 gpu1_step 420 short-a $short "diffcsp:1 flowmm:1 flowmm:2" || return
    # the rest two-way: Task 1 of MatterGen and ADiT and DiffCSP Task 2 on GPU 1, the two
    # small Task 2 runs beside CDVAE on GPU 0
    FIRST_GPU=1 GPUS=1 PER_GPU=3 TRAIN_S=180 SCORE_S=150 gpu1_step 330 short-b $short "mattergen:1 adit:1 diffcsp:2" &
    FIRST_GPU=0 GPUS=1 PER_GPU=2 TRAIN_S=150 SCORE_S=150 gpu1_step 300 short-c $short "mattergen:2 adit:2" &
    wait
    [ -e "$W/done-short-b" ] && [ -e "$W/done-short-c" ] || return
    gpu1_step 300 alone $tp --label alone --variants base --warmup 10 --steps 60 --json "$W/throughput.jsonl" \
        --models diffcsp:1,flowmm:1,mattergen:1,adit:1,diffcsp:2,flowmm:2,mattergen:2,adit:2 || return
    echo "gpu1 done" >> "$W/gpu1.log"
}

gpu0 & gpu1 & wait
# A lent machine returns files of at most 16 MiB (a larger one is silently left out, and a
# call's work with it): everything goes back in 15 MiB parts. Unpack with
#   cat OUT/NAME.tgz.part-* | tar xzf - -C W
pack() {  # NAME PATH...: PATHs relative to W
    local name=$1; shift
    tar czf - -C "$W" --exclude='*.ckpt' --exclude='cdvae*/preds' "$@" | split -b 15M - "$OUT/$name.tgz.part-"
}
pack results .
tar czf - -C "$W" cdvae1/runs cdvae2/runs 2>/dev/null | split -b 15M - "$OUT/cdvae-ckpt.tgz.part-"
# predictions not scored yet come back too
unscored=()
for p in "$W"/cdvae*/preds/*; do
    [ -e "$p" ] || continue
    r="$(dirname "$(dirname "$p")")/results/$(basename "${p%.*}").json"
    [ -s "$r" ] || unscored+=("${p#"$W"/}")
done
[ ${#unscored[@]} -gt 0 ] && tar czf - -C "$W" "${unscored[@]}" | split -b 15M - "$OUT/cdvae-preds.tgz.part-"
grep -q "gpu0 done" "$W/base.log" 2>/dev/null && grep -q "gpu1 done" "$W/gpu1.log" 2>/dev/null \
    && echo "session complete"
tail -3 "$W/gpu1.log"; tail -4 "$W/base.log"
