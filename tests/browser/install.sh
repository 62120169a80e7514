#!/usr/bin/env bash
# What the console's browser tests need: Debian's Chromium, a font with Chinese glyphs (the pages
# are also in Chinese), and axe-core from the pinned package-lock.json. CI runs as root.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
fc-list :lang=zh 2>/dev/null | grep -q . || missing+=(fonts-wqy-microhei)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "needs root to install: ${missing[*]} (apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -f "$HERE/node_modules/axe-core/axe.min.js" ] || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/axe-core/axe.min.js" ]; then
  (cd "$HERE" && npm ci --silent --no-audit --no-fund)
  touch "$HERE/node_modules/axe-core/axe.min.js"
fi
/usr/bin/chromium --version 2>/dev/null | grep -o 'Chromium [0-9.]*' || true
