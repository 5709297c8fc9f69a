#!/usr/bin/env bash
# Install sohoa with its test dependencies and run the whole test suite.
# The tests start their own services (mosquitto, the archive receiver,
# SoftHSM tokens, a private SANE configuration) on 127.0.0.1.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/provisioning/setup-dev.sh" --test
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
