#!/usr/bin/env bash
# One slice (at most 10 minutes) of the Table 5 runs on a lent multi-GPU machine
# (nvidia-h100-x4 or nvidia-h200-x4): benchmarks/train_baselines.py runners side by side, one
# per line of LAYOUT (benchmarks/table5/layout-*.txt: work folder, store, plan, seeds, GPUs,
# and optionally GPUs per run, particles per prediction batch (0: the config's) and processes
# generating each split at once, `c2np predict --shard`).
#
#   bash benchmarks/table5_gpu.sh OUT [SECONDS] [LAYOUT]     (from the repository root)
#
# BF16_ATTENTION (default adit, train_baselines.py's; BF16_ATTENTION= for none) names the
# families whose Task 1 generation runs `c2np predict --attention bf16` (train_baselines.py
# --bf16-attention; benchmarks/adit_attention.py showed ADiT's scores unchanged, 2026-11-27).
# SCORE_WORKERS (default 2) is each runner's number of splits scored at once on the CPU, 8 jobs
# each: a call left with scoring alone can take more (6 on 64 cores: ten Task 1 splits of
# CDVAE and SyMat, 486 or 324 particles each, scored in 5 minutes, 2026-11-26).
# SCORE_JOBS (default 8) is the number of processes scoring one split: ADiT Task 1's OOD
# split, glassy particles of up to 18,000 atoms, took about 77 CPU-minutes on the 2-core dev
# machine (its 16 largest particles about 20; 2026-11-27), so a call scoring little else can
# give it more.
#
# SECONDS = 0 only stages: it installs the wheels, keeps the stores, unpacks the carried
# bundles and copies the work folders into /tmp/gw, then stops (a second or so). A session
# can so carry everything in short calls first, and every GPU trains from the first long call.
# LAYOUT defaults to the newest benchmarks/table5/layout-*.txt; each session's layout is kept,
# so the files say which runner trained which run.
# The runners' work folders live in /tmp/gw on the GPU machine. On a machine kept warm between
# calls, /tmp survives but an ignored folder of the checkout that a call does not carry is
# removed. So a call copies every carried gpu-work/NAME that /tmp/gw does not hold yet and
# leaves the others alone: the first call on a fresh machine carries what it needs (at most
# 64 MiB with the wheels and the stores), a later call may carry more folders, or nothing.
# A layout line runs only once its folder is on the machine (an empty one for a new runner).
# Runs resume from their last checkpoint.
# Runs share a GPU three at a time on 141 GB cards (H200) and two at a time on 80 GB cards
# (H100), where three Task 2 runs (about 22 GB each at peak) do not fit beside a Task 1 run.
#
# What comes back: benchmarks/table5_pack.sh packs /tmp/gw into OUT (the runs' curves, results,
# logs and nvidia-smi dmon first, then the checkpoints and predictions of unscored runs while
# the ~64 MiB a call may return lasts; the rest stays in /tmp/gw for the next call); files an
# earlier call returned unchanged are not sent again, and the call's last line begins
# "NOT RETURNED" while anything stays behind: then table5_return.sh before giving the machine back).
# benchmarks/table5_unpack.sh OUT unpacks it into gpu-work/.
set -uo pipefail
OUT=${1:?out folder}; SECONDS_GIVEN=${2:-545}
LAYOUT=${3:-$(ls benchmarks/table5/layout-*.txt | sort | tail -1)}
[ -f "$LAYOUT" ] || { echo "no layout file: $LAYOUT" >&2; exit 2; }
source benchmarks/gpu_env.sh
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
W=/tmp/gw
# The stores and the wheels travel in the first call only: gpu_env.sh installs the wheels into
# /tmp/site once, and the stores are kept in /tmp/gw/stores, so that a later call on the warm
# machine can spend its ~64 MiB of carry on work folders.
mkdir -p "$W/stores"
for s in c2np-store c2np-store-materials; do
    [ ! -f "$s/manifest.json" ] && [ -d "$W/stores/$s" ] && rm -rf "$s" && cp -a "$W/stores/$s" .
done
[ -f c2np-store/manifest.json ] || { echo "no c2np-store: carry it in the first call" >&2; exit 2; }
# The held-out store differs from the standard one only in its split index, config and manifest:
# carry those three files and take the rest (particles, CIFs, rotations) from c2np-store.
if [ -f c2np-store-materials/manifest.json ]; then
    for f in cifs particles rotations.parquet materials.csv; do
        [ -e "c2np-store-materials/$f" ] || cp -r "c2np-store/$f" c2np-store-materials/
    done
fi
for s in c2np-store c2np-store-materials; do
    [ -f "$s/manifest.json" ] && [ ! -d "$W/stores/$s" ] && cp -a "$s" "$W/stores/"
done
mkdir -p "$OUT" "$W"
# A call carries at most 8 paths: several work folders travel as one bundle, made at home with
#   bash benchmarks/table5_bundle.sh 1 t6b t6m t6mg      (-> gpu-work/carry-1.tar)
# and a larger bundle (ADiT Task 1's checkpoints: about 230 MB) in parts carried over
# several calls, unpacked once all are here.
source benchmarks/table5_lib.sh
unpack_bundles gpu-work "$W.carry"
for d in gpu-work/*/; do  # a carried work folder the machine does not hold yet (never an older copy)
    [ -d "$d" ] && [ ! -d "$W/$(basename "$d")" ] && cp -a "$d" "$W/"
done
if [ "$SECONDS_GIVEN" = 0 ]; then
    echo "compressed bundles (BUNDLE_ZSTD=1) decode here with: $(zstd_decoder)"
    echo "staged, nothing trained; the work folders on the machine:"
    for d in "$W"/*/; do echo "  $(basename "$d"): $(du -sm "$d" | cut -f1) MB"; done
    exit 0
fi
# A converged run whose best.ckpt is committed (results/learned; docs/models.md, "Converged
# runs on the whole test sets") needs no carrying: a work folder on the machine that lacks
# it gets it from the checkout, with its committed results (benchmarks/table5_seed.py).
# Only in a training call, after every staging call has brought what the session carries:
# a folder seeded here is no longer "not held yet", so a later carry of it would be ignored.
python3 benchmarks/table5_seed.py "$LAYOUT" --work "$W" | sed 's/^/seeded: /'
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$W/gpus.txt"
n_gpu=$(nvidia-smi -L | wc -l)
need=$(awk -F'|' '!/^ *#/ && NF >= 7 {n = $5 + $6; if (n > m) m = n} END {print m + 0}' "$LAYOUT")
[ "$n_gpu" -ge "$need" ] || { echo "$LAYOUT needs $need GPUs, found $n_gpu" >&2; exit 2; }
mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
P=2; [ "$mem" -gt 100000 ] && P=3
# Each c2np process would run PyTorch's CPU operations (the samplers' noise draws, the step's
# host side) on as many OpenMP threads as the machine has cores, a dozen processes at once:
# PyTorch's advice for several processes on one host is cores / processes threads each.
# Scoring sets its own BLAS threads (cores / jobs, threadpoolctl).
# A runner has GPUS / GPUS_PER_RUN groups of PER_GPU slots (train_baselines.py).
slots=$(awk -F'|' '!/^ *#/ && NF >= 7 {p = $7; gsub(/ /, "", p); if (p == "P") p = '"$P"'; g = (NF >= 8 && $8 + 0 > 0) ? $8 : 1; n += $5 / g * p} END {print int(n)}' "$LAYOUT")
# nproc itself honours OMP_NUM_THREADS: count the cores without it.
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
per_process=$(( cores / (slots > 0 ? slots : 1) ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( per_process > 0 ? per_process : 1 ))}
echo "$slots training or prediction processes at most: $OMP_NUM_THREADS OpenMP threads each ($cores cores)"
nvidia-smi dmon -s u -d 15 > "$W/dmon.txt" 2>&1 &
dmon=$!

runner() {  # NAME STORE PLAN SEEDS GPUS FIRST PER_GPU GPUS_PER_RUN PREDICT_BATCH SHARDS
    python3 benchmarks/train_baselines.py --store "$2" --work "$W/$1" --plan "$3" --seeds $4 \
        --gpus "$5" --first-gpu "$6" --per-gpu "$7" --gpus-per-run "$8" --predict-batch "$9" \
        --predict-shards "${10}" --jobs "${SCORE_JOBS:-8}" \
        --deadline "$SECONDS_GIVEN" --reserve 45 --score-workers "${SCORE_WORKERS:-2}" \
        --bf16-attention "${BF16_ATTENTION-adit}" > "$W/$1.log" 2>&1
}
pids=()
while IFS='|' read -r name store plan seeds gpus first per group batch shards; do
    for v in name store plan seeds gpus first per group batch shards; do  # trim the padding of the columns
        read -r "$v" <<< "$(echo ${!v})"
    done
    [[ -z $name || $name == \#* ]] && continue
    # only a work folder carried now or earlier: a runner of a folder left at home would
    # start its runs from scratch here (carry an empty gpu-work/NAME for a new runner)
    [ -d "$W/$name" ] || { echo "runner $name: skipped, gpu-work/$name not carried"; continue; }
    [ "$per" = P ] && per=$P
    runner "$name" "$store" "$plan" "$seeds" "$gpus" "$first" "$per" "${group:-1}" "${batch:-0}" "${shards:-1}" \
        & pids+=($!)
    echo "runner $name: $plan | seeds $seeds | GPUs $first+$gpus x $per, ${group:-1} per run" \
        "${batch:+| predicting $batch particles a batch}" "${shards:+| $shards processes a split}"
done < "$LAYOUT"
cp "$LAYOUT" "$W/layout.txt"
wait "${pids[@]}"
kill "$dmon"
sm_means "$W/dmon.txt"
tail -n 30 "$W"/*.log

bash benchmarks/table5_pack.sh "$W" "$OUT" 60
