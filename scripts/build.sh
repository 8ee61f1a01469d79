#!/usr/bin/env bash
# Installs missing Debian packages, configures (Ninja, ccache when present, PCH) and builds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default
cmake --build --preset default -- -j"$(nproc)"
