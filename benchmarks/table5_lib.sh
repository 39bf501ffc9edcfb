# Sourced by table5_pack.sh, table5_bundle.sh, table5_return.sh, table5_gpu.sh and
# table5_unpack.sh: what of a runner's work folder need not travel (to or from a lent GPU
# machine), the bundles, and the GPUs' utilisation of a call.

# objective_version RUN_DIR: the current objective version of the run's model and task, as
# c2np.config.objective_version has it (tests/test_table5_pack.py keeps the two equal).
objective_version() {
    case $(basename "$1") in flowmm-task1-*) echo 3 ;; *-task1-*) echo 2 ;; *) echo 1 ;; esac
}

# sm_means DMON: each GPU's mean SM utilisation over the samples of an `nvidia-smi dmon -s u`
# file (the figure the Table 5 logs report per call), or that it holds no samples.
sm_means() {
    awk -v f="$1" '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ {s[$1] += $2; c[$1]++}
        END {
            out = ""
            for (g = 0; g < 64; g++) if (g in c)
                out = out (out ? ", " : "") sprintf("GPU %d %.0f %% (%d samples)", g, s[g] / c[g], c[g])
            print "mean SM utilisation: " (out ? out : "no samples in " f)
        }' "$1"
}

# stamp W FILES...: a "path size mtime" line per file (paths relative to W), the record of a
# file that table5_pack.sh sent home (W/returned.txt).
stamp() {
    local w=$1
    shift
    (cd "$w" && stat -c '%n %s %Y' "$@" 2> /dev/null) || true
}

# returned_unchanged W: the files of W/returned.txt that have not changed since they were sent.
returned_unchanged() {
    [ -s "$1/returned.txt" ] || return 0
    # shellcheck disable=SC2046  # run folders' paths have no spaces
    stamp "$1" $(cut -d' ' -f1 "$1/returned.txt" | sort -u) | grep -xFf "$1/returned.txt" | sed 's/ [0-9]* [0-9]*$//'
    return 0
}

# stopped_for_good RUN_DIR: true when the run stopped for good (converged, or its epoch or
# time limit) under its task's current objective and has its best.ckpt: only prediction is
# left, and it needs best.ckpt alone. A run of an older objective (run.json without
# objective_version: version 1) trains on from last.ckpt, which must travel.
stopped_for_good() {
    local v
    v=$(grep -oE '"objective_version": *[0-9]+' "$1/run.json" 2> /dev/null | grep -oE '[0-9]+$')
    [ "${v:-1}" = "$(objective_version "$1")" ] \
        && grep -qE '"stop_reason": *"(converged|max_epochs|max_time)"' "$1/run.json" 2> /dev/null \
        && [ -f "$1/best.ckpt" ]
}
#
# needless_excludes W F PREFIX [stopped]: appends to the array `excl` tar --exclude options
# (member names PREFIX/F/...) for the checkpoints and predictions of the runs W/F/scored.txt
# lists (scored on every split), the predictions of every split scored (W/F/results/STEM.json),
# the batches of finished predictions and W/F/superseded/; with "stopped", also
# the last.ckpt of runs that stopped for good (only prediction is left, from best.ckpt).
needless_excludes() {
    local w=$1/$2 f=$2 pre=$3 run p r
    # what runs of an older objective made (train_baselines.py --set-aside) stays home
    excl+=(--exclude="$pre$f/superseded")
    if [ -f "$w/scored.txt" ]; then
        while read -r run; do
            [ -n "$run" ] || continue
            # predictions are named MODEL-taskT-SPLIT-seedS.parquet
            excl+=(--exclude="$pre$f/runs/$run/*.ckpt" --exclude="$pre$f/preds/${run%-seed*}-*-seed${run##*-seed}.parquet*")
        done < "$w/scored.txt"
    fi
    for p in "$w"/preds/*.parquet; do
        [ -f "$p" ] && excl+=(--exclude="$pre$f/preds/$(basename "$p").chunks")
    done
    # the predictions of a split already scored (results/STEM.json): scoring is their only use
    for r in "$w"/results/*.json; do
        [[ -f $r && $r != *.partial.json ]] || continue
        p=$(basename "${r%.json}").parquet
        excl+=(--exclude="$pre$f/preds/$p" --exclude="$pre$f/preds/$p.chunks")
    done
    [ "${4:-}" = stopped ] || return 0
    for r in "$w"/runs/*/; do
        stopped_for_good "$r" && excl+=(--exclude="$pre$f/runs/$(basename "$r")/last.ckpt")
    done
    return 0
}

# bundle_stream FILE...: the tar stream of a bundle, its FILEs (one, or its parts in order)
# joined and, for a .tar.zst bundle (table5_bundle.sh BUNDLE_ZSTD=1), decoded: by zstd
# (C2NP_ZSTD names another command) or, on a machine without it, by pyarrow, which c2np
# needs anyway. The window is 128 MiB (--long=27), what both accept by default.
bundle_stream() {
    case "$1" in
        *.tar.zst | *.tar.zst.part-*)
            case "$(zstd_decoder)" in
                zstd) cat "$@" | "${C2NP_ZSTD:-zstd}" -dc --long=27 ;;
                pyarrow) cat "$@" | python3 -c 'import sys, pyarrow as pa
src = pa.CompressedInputStream(pa.PythonFile(sys.stdin.buffer, mode="r"), "zstd")
while chunk := src.read(1 << 22):
    sys.stdout.buffer.write(chunk)' ;;
                *) echo "no zstd command and no pyarrow: cannot decode $1" >&2; return 1 ;;
            esac ;;
        *) cat "$@" ;;
    esac
}

# zstd_decoder: what decodes a .tar.zst bundle on this machine: zstd, pyarrow or nothing.
zstd_decoder() {
    if command -v "${C2NP_ZSTD:-zstd}" > /dev/null; then echo zstd
    elif python3 -c "import pyarrow" 2> /dev/null; then echo pyarrow
    else echo nothing
    fi
}

# untar_into DIR FILE...: unpack a bundle's stream into DIR only if all of it decodes: it goes
# into a temporary folder first, since a half-unpacked work folder in DIR would be copied to
# the runners (a truncated last.ckpt, say).
untar_into() {
    local dir=$1; shift
    local tmp rc
    tmp=$(mktemp -d "$dir/.unpack.XXXXXX") || return 1
    (set -o pipefail; bundle_stream "$@" | tar xf - -C "$tmp") && cp -a "$tmp/." "$dir/"
    rc=$?
    rm -rf "$tmp"
    return $rc
}

# unpack_bundles GPUWORK STASH: on the GPU machine, unpack every carried bundle into GPUWORK.
# A whole bundle (GPUWORK/carry-N.tar, or .tar.zst) is unpacked at once; the parts of a split
# one (GPUWORK/carry-N.tar[.zst].part-K-of-M, carried over several calls) wait in STASH, which
# survives between calls on a warm machine, until all M are there. A bundle that does not
# decode keeps its file or parts, and says so.
unpack_bundles() {
    local g=$1 stash=$2 t p first base m k have
    mkdir -p "$stash"
    for t in "$g"/carry-*.tar{,.zst}; do
        [ -f "$t" ] || continue
        if untar_into "$g" "$t"; then
            rm "$t"
        else
            echo "bundle $(basename "$t"): could not unpack it (kept)"
        fi
    done
    for p in "$g"/carry-*.tar{,.zst}.part-*-of-*; do
        [ -f "$p" ] && mv "$p" "$stash/"
    done
    for first in "$stash"/carry-*.tar{,.zst}.part-1-of-*; do
        [ -f "$first" ] || continue
        base=${first%.part-1-of-*}; m=${first##*-of-}
        have=$(compgen -G "$base.part-*-of-$m" | wc -l)
        if [ "$have" -lt "$m" ]; then
            echo "bundle $(basename "$base"): $have of $m parts on the machine, waiting for the rest"
            continue
        fi
        local files=()
        for k in $(seq 1 "$m"); do files+=("$base.part-$k-of-$m"); done
        if untar_into "$g" "${files[@]}"; then
            rm "${files[@]}" && echo "bundle $(basename "$base"): all $m parts, unpacked"
        else
            echo "bundle $(basename "$base"): could not unpack its $m parts (kept in $stash)"
        fi
    done
    return 0
}
