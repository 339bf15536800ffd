#!/usr/bin/env bash
# `docker-compose config` validates docker-compose.yml in tests/integration/test_compose_config.py. No Docker
# Compose v2 plugin can be installed from a package registry here, so the test runs Compose v1 (docker-compose
# 1.29.2, the Python implementation of the same `config` command, Compose Specification aware) from a venv of its
# own (its pins, PyYAML < 6 and jsonschema < 4, clash with ours). Installs it when missing; fails loudly otherwise.
set -euo pipefail
PYTHON=${1:-python3}
VENV=.venv-compose
if [[ -x $VENV/bin/docker-compose ]]; then
  exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
"${PIP[@]}" "cython<3" wheel setuptools
# PyYAML 5.4.1 has no wheel for Python 3.11 and its sdist does not build with Cython 3.
"${PIP[@]}" --no-build-isolation "pyyaml==5.4.1"
"${PIP[@]}" "docker-compose==1.29.2"
"$VENV/bin/docker-compose" version --short
