#!/usr/bin/env bash
# Pack the train_baselines.py work folders under W for the trip back from a lent GPU machine,
# which returns at most 8 files and about 64 MiB per call (a larger file or the files beyond the
# total are silently lost). OUT gets:
#   1-small.tgz[.part-*]     everything but checkpoints, predictions and the stores (runs'
#                            curves and run.json, results, logs, status tables, left-out.txt)
#   2-ckpt-final.tgz.part-*  best.ckpt of runs that stopped for good       } file by file,
#                            (converged), not scored yet                   } in this order,
#   2-ckpt-task2.tgz.part-*  checkpoints of paused Task 2 runs               } while MIB
#   3-ckpt-task1.tgz.part-*  checkpoints of paused Task 1 runs               } lasts
#   4-preds.tgz.part-*       predictions (and their chunks) of unscored runs }
# A converged run's best.ckpt is the whole of its training and a few MB: it goes first (in
# s18 the paused runs' pairs took the room of one, which was then lost with the machine).
# The predictions of a split whose result exists stay behind. A checkpoint or prediction file
# that an earlier call of the same machine returned and that has not changed since (same size
# and modification time, recorded in W/returned.txt) is not sent again: in s18 a converged
# run's best.ckpt went home three times while another run's, never sent, was lost with the
# machine. PACK_RESEND=1 sends them all again (when a call's files did not reach home).
# A run counts as scored when its runner listed it in W/NAME/scored.txt (all its test splits
# scored; train_baselines.py writes it at the end of every call). What did not fit is listed
# in W/left-out.txt (also inside 1-small.tgz). benchmarks/table5_unpack.sh OUT unpacks it.
#
#   bash benchmarks/table5_pack.sh W OUT [MIB]     (MIB default 60)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/table5_lib.sh"
W=${1:?work root}; OUT=${2:?out folder}; RETURN_MIB=${3:-60}
mkdir -p "$OUT"

ckpts() {  # RUN_DIR final|paused: the checkpoints a run still needs, as one item (a:b):
           # best.ckpt alone once it stopped for good (only prediction is left; last.ckpt,
           # with Adam's moments, is twice its size), both while it trains (resuming needs both)
    local d=${1%/}
    if stopped_for_good "$d"; then
        [ "$2" = final ] && echo "$d/best.ckpt"
    else
        [ "$2" = paused ] && compgen -G "$d/*.ckpt" | paste -sd:
    fi
    return 0
}

unscored() {  # final | ckpt1 | ckpt2 | preds: files (relative to W) of runs not all scored,
              # one item per line; predictions of a split already scored stay behind
    local r w n p stem
    for r in "$W"/*/runs/*/; do
        [ -d "$r" ] || continue
        w=$(dirname "$(dirname "$r")"); n=$(basename "$r")
        grep -qxF "$n" "$w/scored.txt" 2> /dev/null && continue
        case $1 in
            final) ckpts "$r" final ;;
            ckpt1) [[ $n == *task1* ]] && ckpts "$r" paused ;;
            ckpt2) [[ $n == *task2* ]] && ckpts "$r" paused ;;
            preds) compgen -G "$w/preds/${n%-seed*}-*-seed${n##*-seed}*" | while read -r p; do
                       stem=$(basename "${p%.chunks}"); stem=${stem%.*}
                       [ -f "$w/results/$stem.json" ] && continue
                       # a batch travels with its folder's manifest (without it, the next
                       # call would discard the batches as another prediction's)
                       if [ -f "$p/manifest.json" ]; then
                           find "$p" -type f ! -name manifest.json | sed "s|.*|$p/manifest.json:&|"
                       else find "$p" -type f; fi
                   done ;;
        esac
    done | sed "s|$W/||g"
    return 0
}

: > "$W/left-out.txt"
# The stores (kept in W/stores between calls) and the other bulky inputs never travel back.
small_excl=(--exclude='*.ckpt' --exclude='*/preds/*' --exclude=./stores)
# 1-small.tgz is measured before the tiers take their share (packed once here for its size,
# again at the end when left-out.txt is complete); a file over 15 MiB goes in parts, since
# a larger returned file is lost.
tar czf "$OUT/1-small.tgz" -C "$W" "${small_excl[@]}" .
spent=$(( ($(stat -c %s "$OUT/1-small.tgz") >> 20) + 2 ))
small_parts() {
    if [ "$(stat -c %s "$OUT/1-small.tgz")" -gt $((15 << 20)) ]; then
        split -b 15M "$OUT/1-small.tgz" "$OUT/1-small.tgz.part-" && rm "$OUT/1-small.tgz"
    fi
    ls -l "$OUT"
}
touch "$W/returned.txt"
[ "${PACK_RESEND:-0}" = 1 ] && : > "$W/returned.txt"
# before: files an earlier call returned, unchanged since; unchanged: those of them not sent again
declare -A before=() unchanged=()
while read -r f; do before[$f]=1; done < <(returned_unchanged "$W")
tier() {  # NAME ITEMS...: as many of ITEMS (a:b = files kept together), in order, as fit
    local name=$1 item mib files keep=()
    shift
    for item in "$@"; do
        IFS=: read -ra files <<< "$item"
        # a file already home and unchanged since (stamped alike in returned.txt) stays; the
        # item's other files still travel together
        for f in "${files[@]}"; do [ -n "${before[$f]:-}" ] && unchanged[$f]=1; done
        mapfile -t files \
            < <(stamp "$W" "${files[@]}" | grep -vxFf "$W/returned.txt" | sed 's/ [0-9]* [0-9]*$//')
        [ ${#files[@]} -eq 0 ] && continue
        mib=$(( ($(cd "$W" && stat -c %s "${files[@]}" | awk '{s += $1} END {print s}') >> 20) + 1 ))
        if [ $((spent + mib)) -le "$RETURN_MIB" ]; then
            keep+=("${files[@]}"); spent=$((spent + mib))
            stamp "$W" "${files[@]}" >> "$W/returned.txt"  # at once: a later item's shared manifest is sent once
        else printf '%s\n' "${files[@]}" >> "$W/left-out.txt"; fi
    done
    if [ ${#keep[@]} -gt 0 ]; then
        tar czf - -C "$W" "${keep[@]}" | split -b 15M - "$OUT/$name.tgz.part-"
    fi
    return 0
}
tier 2-ckpt-final $(unscored final)
tier 2-ckpt-task2 $(unscored ckpt2)
tier 3-ckpt-task1 $(unscored ckpt1)
tier 4-preds $(unscored preds)
sort -u -o "$W/left-out.txt" "$W/left-out.txt"  # a manifest shared by several batches left out
[ -s "$W/left-out.txt" ] && { echo "left in $W (not returned):"; sed 's/^/  left: /' "$W/left-out.txt"; }
# left-out.txt is final only now: 1-small.tgz is packed last, into the MiB set aside first
tar czf "$OUT/1-small.tgz" -C "$W" "${small_excl[@]}" .
small_parts
[ ${#unchanged[@]} -gt 0 ] \
    && echo "not sent again: ${#unchanged[@]} files returned unchanged by an earlier call ($W/returned.txt)"
# The last line of the call, and loud: a caller that filters the output above (as s18's did,
# losing a machine's worth of checkpoints) still sees what stays behind.
if [ -s "$W/left-out.txt" ]; then
    echo "NOT RETURNED: $(wc -l < "$W/left-out.txt") files," \
         "$(cd "$W" && tr '\n' '\0' < left-out.txt | du -cm --files0-from=- | tail -1 | cut -f1) MiB" \
         "stay in $W: bring them home with benchmarks/table5_return.sh OUT K (K = 0, 1, ...) before the machine goes back"
else
    echo "everything the runners still need came back"
fi
