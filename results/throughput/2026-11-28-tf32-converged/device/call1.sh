#!/usr/bin/env bash
# s32, call 1 (2 GPUs): CDVAE Task 1 trained to convergence with the captured step, fp32 (GPU 0) and
# tf32 (GPU 1), seeds 0 and 1 side by side on each GPU, then predicted and scored on the whole ID and OOD
# sets by benchmarks/train_baselines.py. Resumable: W comes back packed in $OUT/{fp32,tf32}.
set -u
source benchmarks/gpu_env.sh
T0=$(date +%s); L=${1:-545}
mkdir -p /tmp/logs; nvidia-smi -L | tee /tmp/logs/gpu.txt; nproc >> /tmp/logs/gpu.txt
for p in fp32 tf32; do [ -d gpu-s32/w-$p ] && cp -r gpu-s32/w-$p /tmp/w-$p; done
run() {  # precision, gpu
  local extra=(); [ $1 = tf32 ] && extra=(--set train.tf32=true)
  python benchmarks/train_baselines.py --store c2np-store --work /tmp/w-$1 --plan cdvae:1 --seeds 0 1 \
    --gpus 1 --first-gpu $2 --per-gpu 2 --jobs 7 --score-workers 2 --deadline $((L - ($(date +%s) - T0))) \
    --set train.capture=true --set train.compile=loss "${extra[@]}" --pack $OUT/$1 > /tmp/logs/$1.log 2>&1
  echo "$1 rc $?" >> /tmp/logs/$1.log; }
run fp32 0 & run tf32 1 &
while [ "$(jobs -r | wc -l)" -gt 0 ]; do sleep 30; echo "t=$(( $(date +%s) - T0 )) s $(nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader | tr '\n' ' ')" | tee -a /tmp/logs/smi.txt; done
tar czf $OUT/logs.tgz -C /tmp logs
for p in fp32 tf32; do echo "== $p"; tail -12 /tmp/logs/$p.log; done
