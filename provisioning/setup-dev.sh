#!/usr/bin/env bash
# Install the Debian packages and a virtual environment (.venv) for sohoa.
# Usage: provisioning/setup-dev.sh [--test]   (--test adds the test dependencies)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"

as_root=()
if [[ $(id -u) -ne 0 ]]; then
    as_root=(sudo)
fi

mapfile -t packages < <(grep -v '^\s*#' "$repo/provisioning/debian-packages.txt" | grep -v '^\s*$')
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "Installing Debian packages: ${missing[*]}"
    "${as_root[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [[ ! -x "$repo/.venv/bin/python" ]]; then
    "$python" -m venv "$repo/.venv"
fi
"$repo/.venv/bin/pip" install -q --upgrade pip
"$repo/.venv/bin/pip" install -q -e "$repo$extras"
if [[ -n "$extras" ]]; then
    # The wheels that carry the float source models, for the int8-against-float OCR tests.
    # Without their dependencies: the tests only read the model files they ship.
    "$repo/.venv/bin/pip" install -q --no-deps rapidocr==3.10.0 asterocr==1.0.2
fi
echo "sohoa installed in $repo/.venv"
