#!/usr/bin/env bash
# Issue #8 in one command on the device machine: stage the carried wheels, install them once, run the validation.
#
#   bash scripts/gpu-validate.sh --stage-only       in a device call that carries one .whl/<chunk>: keep it in /tmp
#   bash scripts/gpu-validate.sh [--steps LIST]     install every staged chunk once into /tmp/site, then run
#                                                   python -m bench.gpu.validate (steps: inventory,train,preempt,
#                                                   warm_start,memory,infer,pytest; default all)
#   bash scripts/gpu-validate.sh --cpu-dry-run      on a machine without a GPU: tiny sizes, simulated inventory
#
# Results: one JSON per step and summary.json under $OUT (the device tool's folder), else ./gpu-results.
# Wheels come from `make gpu-wheels`; docs/gpu-validation.md has the exact sequence of device calls.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${OUT:-}" ]; then
  OUT_DIR=$OUT
else  # a local run: results beside the tree, never committed
  OUT_DIR=$ROOT/gpu-results
  mkdir -p "$ROOT/.git/info"
  grep -qx '/gpu-results/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/gpu-results/' >>"$ROOT/.git/info/exclude"
fi
SITE=/tmp/site
STAGE=/tmp/yoloq-wheels
LIST=$ROOT/scripts/gpu-wheels.txt
mode=run
steps=all
dry=()
while [ $# -gt 0 ]; do
  case $1 in
    --stage-only) mode=stage ;;
    --cpu-dry-run) dry=(--cpu-dry-run) ;;
    --steps) steps=${2:?--steps needs a list}; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu-validate: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ ${#dry[@]} -gt 0 ] && [ -x "$ROOT/.venv/bin/python" ]; then PY=${PYTHON:-$ROOT/.venv/bin/python}; else PY=${PYTHON:-python3}; fi

stage() {  # copy every carried chunk out of the tree: /tmp survives between calls while the machine stays warm
  local dir chunk
  for dir in "$ROOT"/.whl/*/; do
    [ -f "$dir/MANIFEST" ] || continue
    chunk=$(basename "$dir")
    mkdir -p "$STAGE/$chunk"
    cp -f "$dir"*.whl "$dir/MANIFEST" "$STAGE/$chunk/"
    echo "gpu-validate: staged $chunk ($(find "$STAGE/$chunk" -name '*.whl' | wc -l) wheels)"
  done
}

install() {  # one pip call for all chunks: --target with --upgrade would replace bin/ chunk by chunk
  local chunk missing="" signature
  for chunk in $(grep -v '^#' "$LIST" | awk 'NF {print $1}' | sort -u); do
    [ -f "$STAGE/$chunk/MANIFEST" ] || missing="$missing $chunk"
  done
  if [ -n "$missing" ]; then
    echo "gpu-validate: not staged yet:$missing (carry each .whl/<chunk> in a --stage-only call)" >&2
    return 1
  fi
  signature=$(cat "$STAGE"/*/MANIFEST | sha256sum | cut -c1-16)
  if [ "$(cat "$SITE/.yoloq-wheels" 2>/dev/null)" = "$signature" ]; then
    echo "gpu-validate: wheels already installed in $SITE"
    return 0
  fi
  "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' ||
    { echo "gpu-validate: $PY is not Python 3.12: download wheels for its version" >&2; return 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$STAGE"/*/*.whl && echo "$signature" >"$SITE/.yoloq-wheels" && echo "gpu-validate: installed into $SITE"
}

if [ ${#dry[@]} -eq 0 ]; then
  stage
  if [ "$mode" = stage ]; then
    install 2>/dev/null || true  # the last chunk installs at once; earlier ones just wait in $STAGE
    exit 0
  fi
  install || exit 1
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
  WORK=/tmp/yoloq-gpu-validate
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  WORK=${TMPDIR:-/tmp}/yoloq-gpu-dry-run
fi

# The real inventory, and no stray settings: yoloq rejects unknown YOLOQ_* keys and YOLOQ_GPUS would simulate.
for var in $(env | grep -o '^YOLOQ_[A-Z0-9_]*' || true); do unset "$var"; done
export PYTHONUNBUFFERED=1
cd "$ROOT" || exit 1
exec "$PY" -m bench.gpu.validate --out "$OUT_DIR" --work "$WORK" --steps "$steps" "${dry[@]}"
