#!/usr/bin/env bash
# qgis_process with this checkout's plugin enabled in a throw-away profile.
# Debian's /usr/bin/qgis_process wrapper passes --noversioncheck, which the binary rejects,
# and the binary's Python does not see the venv: both are handled here.
# Usage: scripts/qgis_process.sh run sn6_footprints:extract_footprints -- INPUT=... OUTPUT=...
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
plugins="${SN6_PLUGINS_DIR:-$repo/build/plugins}"
[ -f "$plugins/sn6_footprints/metadata.txt" ] || { echo "plugin not installed: run 'make install-plugin'" >&2; exit 2; }
profile_home="$(mktemp -d -t sn6-qgis-home-XXXXXX)"
trap 'rm -rf "$profile_home"' EXIT
unset QGIS_CUSTOM_CONFIG_PATH QGIS_OPTIONS_PATH  # always the fresh profile below
export HOME="$profile_home" QGIS_PLUGINPATH="$plugins" QT_QPA_PLATFORM=offscreen
export PYTHONPATH="$repo/.venv/lib/python3.11/site-packages${PYTHONPATH:+:$PYTHONPATH}"
export XDG_RUNTIME_DIR="$profile_home/runtime"; mkdir -p -m 700 "$XDG_RUNTIME_DIR"
qgis_process.bin plugins enable sn6_footprints >/dev/null 2>&1
exec qgis_process.bin "$@"
