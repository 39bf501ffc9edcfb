#!/usr/bin/env bash
# Reproduce the README's reference results: every baseline on both tasks and splits,
# the analytic Task 2 solver on 20 random configurations per (material, R), and the
# noise sweep. About 40 minutes on 2 cores; minutes on 16.
#   bash benchmarks/reference_results.sh [STORE] [JOBS]
set -euo pipefail
store=${1:-c2np-store}
jobs=${2:-0}
c2np build "$store" -q -j "$jobs"
for split in id ood; do
  c2np baseline --model analytic --task 1 --split $split --store "$store" -j "$jobs" -q
  c2np baseline --model template --task 1 --split $split --store "$store" -j "$jobs" -q
  c2np baseline --model analytic --task 2 --split $split --store "$store" --sample 20 -j "$jobs" -q
  c2np baseline --model template --task 2 --split $split --store "$store" -j "$jobs" -q
  c2np baseline --model mean --task 2 --split $split --store "$store" -j "$jobs" -q
done
c2np sweep --store "$store" --out results -j "$jobs" -q
c2np report results/*-task*.json --out results/report
