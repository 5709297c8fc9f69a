#!/usr/bin/env bash
# Install sohoa and run the main job on the sample pages shipped in samples/:
# scan through libsane, recognize, build the PDF, sign with a SoftHSM token,
# upload to a local reference archive, report over a local MQTT broker.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/provisioning/setup-dev.sh"
cd "$repo"
exec "$repo/.venv/bin/sohoa" demo --workdir "${SOHOA_DEMO_DIR:-$repo/demo-data}" "$@"
