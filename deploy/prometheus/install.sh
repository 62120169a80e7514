#!/usr/bin/env bash
# Debian's Prometheus server and promtool, unpacked into .tools/ (no root, nothing installed
# system-wide). Used by the monitoring tests: promtool check/test and a real scrape.
set -euo pipefail
VERSION="2.42.0+ds-5+deb12u1"
DEST="${1:-.tools/prometheus}"
if [ -x "$DEST/usr/bin/promtool" ] && [ -x "$DEST/usr/bin/prometheus" ]; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download "prometheus=$VERSION" >/dev/null 2>&1; then
  # A machine whose package lists are stale or missing: refresh them (needs root), then retry.
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null; fi
  apt-get download "prometheus=$VERSION" >/dev/null 2>&1 || apt-get download prometheus
fi
cd - >/dev/null
mkdir -p "$DEST"
dpkg-deb -x "$work"/prometheus_*.deb "$DEST"
"$DEST/usr/bin/promtool" --version | head -1
