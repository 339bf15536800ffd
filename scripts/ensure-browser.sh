#!/usr/bin/env bash
# The status-page test drives Debian's Chromium through its ChromeDriver (tests/integration/test_api.py).
# Installs both when missing; fails loudly (the test does not skip) when it cannot.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure-browser: need root (or passwordless sudo) to apt-get install chromium chromium-driver" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
test -x /usr/bin/chromium && test -x /usr/bin/chromedriver
echo "ensure-browser: installed $(/usr/bin/chromium --version)"
