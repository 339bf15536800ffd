#!/usr/bin/env bash
# Download the wheels the GPU machine lacks into .whl/<chunk>/ (issue #8), one chunk per device `run` call.
#
# The device has no registry access; wheels travel in the working tree, at most 64 MiB per call with the tree, so
# scripts/gpu-wheels.txt splits them into chunks. Versions come from .venv (what the CPU suite tests); the
# platform is the device's: CPython 3.12, manylinux x86_64. .whl/ is kept out of git through .git/info/exclude and
# is never committed. Usage: scripts/gpu-wheels.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:-$ROOT/.venv/bin/python}
LIST=$ROOT/scripts/gpu-wheels.txt
DEST=$ROOT/.whl
LIMIT_MIB=60  # 64 MiB per call, minus the working tree (< 1 MiB) and headroom

mkdir -p "$ROOT/.git/info"
grep -qx '/.whl/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.whl/' >>"$ROOT/.git/info/exclude"

chunks=$(grep -v '^#' "$LIST" | awk 'NF {print $1}' | sort -u)
for chunk in $chunks; do
  specs=()
  for name in $(awk -v c="$chunk" '$1 == c {print $2}' "$LIST"); do
    version=$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name") ||
      { echo "gpu-wheels: $name is not installed in $PY (run make setup)" >&2; exit 1; }
    specs+=("$name==$version")
  done
  rm -rf "${DEST:?}/$chunk"
  mkdir -p "$DEST/$chunk"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST/$chunk" "${specs[@]}"
  printf '%s\n' "${specs[@]}" >"$DEST/$chunk/MANIFEST"
  mib=$(du -sm "$DEST/$chunk" | cut -f1)
  echo "gpu-wheels: .whl/$chunk ${mib} MiB (${#specs[@]} wheels)"
  if [ "$mib" -gt "$LIMIT_MIB" ]; then
    echo "gpu-wheels: .whl/$chunk is over ${LIMIT_MIB} MiB: split it in scripts/gpu-wheels.txt" >&2
    exit 1
  fi
done
echo "gpu-wheels: carry each chunk in its own device call; see docs/gpu-validation.md"
