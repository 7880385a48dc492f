#!/usr/bin/env bash
# qgis_process with this checkout's plugin enabled in a throw-away profile, as a user runs it:
# no PYTHONPATH; the worker environment (default: this checkout's .venv, made by make setup)
# is verified and recorded in the profile by the plugin's own headless installer.
# Debian's /usr/bin/qgis_process wrapper passes --noversioncheck, which the binary rejects.
# Usage: scripts/qgis_process.sh run sn6_footprints:extract_footprints -- INPUT=... OUTPUT=...
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
plugins="${SN6_PLUGINS_DIR:-$repo/build/plugins}"
worker_env="${SN6_WORKER_ENV:-$repo/.venv}"
[ -f "$plugins/sn6_footprints/metadata.txt" ] || { echo "plugin not installed: run 'make install-plugin'" >&2; exit 2; }
profile_home="$(mktemp -d -t sn6-qgis-home-XXXXXX)"
trap 'rm -rf "$profile_home"' EXIT
unset QGIS_CUSTOM_CONFIG_PATH QGIS_OPTIONS_PATH PYTHONPATH  # always the fresh profile below
export HOME="$profile_home" QGIS_PLUGINPATH="$plugins" QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="$profile_home/runtime"; mkdir -p -m 700 "$XDG_RUNTIME_DIR"
profile="$HOME/.local/share/QGIS/QGIS3/profiles/default"
(cd "$plugins" && /usr/bin/python3 -m sn6_footprints.install --check --env "$worker_env" --profile "$profile" >/dev/null) \
  || { echo "the worker environment $worker_env does not pass the installer's check: run 'make setup'" >&2; exit 2; }
qgis_process.bin plugins enable sn6_footprints >/dev/null 2>&1
status=0
qgis_process.bin "$@" || status=$?  # not exec: the EXIT trap must remove the profile
exit "$status"
