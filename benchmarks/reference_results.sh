#!/usr/bin/env bash
# Reproduce the README's reference results: every baseline on both tasks and splits,
# the analytic Task 2 solver on 10 (ID) and 20 (OOD) random configurations per
# (material, R), and the noise sweep on every 9th material. About 40 minutes on 2
# cores; the README's numbers came from 16 cores (minutes).
#   bash benchmarks/reference_results.sh [STORE] [JOBS] [all|task1]
# task1 re-scores only the Task 1 reference rows (analytic and template, both splits)
# and rewrites results/report: the one command to run after a change to the cells or
# the Task 1 metrics (about 25 minutes on the shared 2-core machine). The learned results
# in results/learned/, and the template rows scored on their 20-per-radius sample, are
# re-made with the learned runs.
set -euo pipefail
store=${1:-c2np-store}
jobs=${2:-0}
what=${3:-all}
c2np build "$store" -q -j "$jobs"
if [ "$what" = task1 ]; then
  for split in id ood; do
    c2np baseline --model analytic --task 1 --split $split --store "$store" -j "$jobs" -q
    c2np baseline --model template --task 1 --split $split --store "$store" -j "$jobs" -q
  done
  c2np report results/*-task*.json --out results/report
  exit 0
fi
for split in id ood; do
  sample=$([ "$split" = id ] && echo 10 || echo 20)
  c2np baseline --model analytic --task 1 --split $split --store "$store" -j "$jobs" -q
  c2np baseline --model template --task 1 --split $split --store "$store" -j "$jobs" -q
  c2np baseline --model analytic --task 2 --split $split --store "$store" --sample "$sample" -j "$jobs" -q
  c2np baseline --model template --task 2 --split $split --store "$store" -j "$jobs" -q
  c2np baseline --model mean --task 2 --split $split --store "$store" -j "$jobs" -q
done
materials=$(python3 -c "import c2np; print(','.join(c2np.open_dataset('$store').material_names()[::9]))")
c2np sweep --store "$store" --out results --per-group 1 --materials "$materials" -j "$jobs" -q
c2np report results/*-task*.json --out results/report
