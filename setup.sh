#!/usr/bin/env bash
# One-step set-up on a fresh machine: Python packages (CPU/GPU torch pinned) and Debian's Chromium
# for the browser test. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install --quiet torch==2.14.1 torchvision==0.29.1
python3 -m pip install --quiet -e ".[all,test]"
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; the browser test will be skipped" >&2
  else
    echo "setup: install Debian's chromium for the browser test (apt-get install chromium)" >&2
  fi
fi
echo "setup: done. Start the app: python launch.py   Fast tests: python -m pytest -m \"not slow\" -q -n 2 --dist loadfile   All tests: python -m pytest -q -n 2 --dist loadfile"
