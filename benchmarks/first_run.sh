#!/usr/bin/env bash
# The README's first-run measurement, from a fresh clone: venv + install + `c2np run`.
#
#   bash benchmarks/first_run.sh [REPO]      # REPO: a path or URL (default: this checkout)
#
# Prints wall and CPU time (user + sys, worker processes included) of the install and of
# `c2np run` (store build + default subset). Run it on an idle machine: on a shared one
# the wall time says how busy the machine was, the CPU time still says what the work costs.
set -euo pipefail
repo=${1:-$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/c2np"
cd "$work/c2np"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "install:  %e s wall, %U s user + %S s sys CPU" \
    bash -c 'python3 -m venv .venv && .venv/bin/pip install -q -e .'
/usr/bin/time -f "c2np run: %e s wall, %U s user + %S s sys CPU" .venv/bin/c2np run > run.log 2>&1 \
    || { tail -20 run.log; exit 1; }
grep -E "^built in|^estimate" run.log || true
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
tail -n 30 run.log
