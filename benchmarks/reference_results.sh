#!/usr/bin/env bash
# Reproduce the reference rows (analytic, template, mean) of both split schemes:
#   radius    (the paper's splits)   store c2np-store,           results/*.json, results/report/
#   materials (held-out materials)   store c2np-store-materials, results/materials/*.json,
#                                    results/materials/report/, and the held-out table in docs/splits.md
# plus the noise sweep of the analytic solver (radius scheme, every 9th material).
#
# Where scoring everything is too slow, a seeded sample is scored and recorded in the
# result JSON ("sample"). The plans below give, per split, the Task 1 sample (k materials
# per radius; "-" = every (material, R); "x" = no Task 1 rows) and the analytic Task 2
# sample (k configurations per (material, R)); template and mean Task 2 always score
# every configuration.
# A2_ID / A2_OOD set the analytic Task 2 sample of the radius scheme (configurations per
# (material, R); default 10 and 20, about 40 minutes on 2 idle cores, or minutes on 16);
# A2_SEEN that of the seen materials in the materials scheme (default 1).
#   bash benchmarks/reference_results.sh [JOBS] [SCHEMES]     # SCHEMES: "radius materials" (default)
#   A2_ID=1 A2_OOD=1 SWEEP=0 bash benchmarks/reference_results.sh 2   # how the committed rows were made
set -euo pipefail
jobs=${1:-0}
schemes=${2:-radius materials}

plan_radius="id - ${A2_ID:-10}
ood - ${A2_OOD:-20}"
plan_materials="id 10 ${A2_SEEN:-1}
ood 10 ${A2_SEEN:-1}
unseen_id - 2
unseen_ood - 2
unseen_train x 1"

run_scheme() {  # store, output directory, plan
  local store=$1 out=$2 plan=$3
  while read -r split t1 a2 <&3; do
    local s1=() t1_models="analytic template"
    if [ "$t1" = "x" ]; then t1_models=""; elif [ "$t1" != "-" ]; then s1=(--sample "$t1"); fi
    for model in $t1_models; do
      c2np baseline --model $model --task 1 --split "$split" --store "$store" "${s1[@]}" -j "$jobs" -q \
        --out "$out/$model-task1-$split.json"
    done
    c2np baseline --model analytic --task 2 --split "$split" --store "$store" --sample "$a2" -j "$jobs" -q \
      --out "$out/analytic-task2-$split.json"
    for model in template mean; do
      c2np baseline --model $model --task 2 --split "$split" --store "$store" -j "$jobs" -q \
        --out "$out/$model-task2-$split.json"
    done
  done 3<<< "$plan"
  c2np report "$out"/*-task*.json --out "$out/report"
}

for scheme in $schemes; do
  case $scheme in
    radius)
      c2np build c2np-store -q -j "$jobs"
      run_scheme c2np-store results "$plan_radius"
      materials=$(python3 -c "import c2np; print(','.join(c2np.open_dataset('c2np-store').material_names()[::9]))")
      if [ "${SWEEP:-1}" = 1 ]; then  # SWEEP=0 keeps results/noise_sweep.*
        c2np sweep --store c2np-store --out results --per-group 1 --materials "$materials" -j "$jobs" -q
      fi ;;
    materials)
      c2np build c2np-store-materials --split-scheme materials -q -j "$jobs"
      mkdir -p results/materials
      run_scheme c2np-store-materials results/materials "$plan_materials"
      c2np splits c2np-store-materials --doc docs/splits.md ;;
    *) echo "unknown scheme $scheme (radius or materials)" >&2; exit 2 ;;
  esac
done
