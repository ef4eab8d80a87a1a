#!/usr/bin/env bash
# Oris benchmarks: `scripts/bench/run.sh [--quick] [bench.py options]` (see README.md here).
#
# Prepares the project venv (.venv, `pip install -e .` when oris is missing) and a separate
# venv for the peers and tools (.bench/venv: pgqueuer, procrastinate, psycopg[binary], py-spy),
# checks PostgreSQL, then runs bench.py from the project venv. Nothing is added to the project's
# dependencies. Results: .bench/results-<timestamp>.json plus a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."

PG_BASE="${BENCH_PG:-postgresql://postgres@127.0.0.1:5432}"
PYTHON="${PYTHON:-python3}"

log() { printf '== %s\n' "$*" >&2; }

if [ ! -x .venv/bin/python ]; then
  log "creating the project venv (.venv)"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c 'import oris, asyncpg, httpx' >/dev/null 2>&1; then
  log "installing the runtime into .venv (pip install -e .)"
  .venv/bin/pip install -q -e .
fi

if [ ! -x .bench/venv/bin/python ]; then
  log "creating the peers venv (.bench/venv)"
  mkdir -p .bench
  "$PYTHON" -m venv .bench/venv
  .bench/venv/bin/pip install -q --upgrade pip
fi
if ! .bench/venv/bin/python -c 'import pgqueuer, procrastinate, psycopg, asyncpg' >/dev/null 2>&1 \
  || [ ! -x .bench/venv/bin/py-spy ]; then
  log "installing peers and tools into .bench/venv"
  .bench/venv/bin/pip install -q pgqueuer procrastinate 'psycopg[binary]' asyncpg py-spy
fi

if command -v pg_isready >/dev/null 2>&1; then
  pg_isready -d "$PG_BASE/postgres" -q || { echo "PostgreSQL is not reachable at $PG_BASE" >&2; exit 2; }
fi

# --ref REV: measure that commit instead of the working tree. Its tree is exported with
# `git archive` (the working tree and index are not touched) and installed, not editable, with
# the dependencies that commit declares, into .bench/ref-<sha>/venv; every oris process of the
# run (and bench.py itself) then imports that copy. Use it for baselines while code changes.
args=()
ref=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ref) ref="$2"; shift 2 ;;
    --ref=*) ref="${1#--ref=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
BENCH_PY=.venv/bin/python
if [ -n "$ref" ]; then
  sha="$(git rev-parse --verify "$ref^{commit}")"
  dir=".bench/ref-${sha:0:12}"
  if [ ! -x "$dir/venv/bin/python" ] || [ ! -f "$dir/.installed" ]; then
    log "exporting $ref ($sha) to $dir and installing it"
    rm -rf "$dir" && mkdir -p "$dir/src"
    git archive --format=tar "$sha" | tar -x -C "$dir/src"
    "$PYTHON" -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q --upgrade pip
    "$dir/venv/bin/pip" install -q "$dir/src"
    touch "$dir/.installed"
  fi
  BENCH_PY="$dir/venv/bin/python"
  export BENCH_ORIS_REF="$ref" BENCH_ORIS_COMMIT="$sha"
fi

exec "$BENCH_PY" scripts/bench/bench.py --pg "$PG_BASE" ${args[@]+"${args[@]}"}
