#!/usr/bin/env bash
# Builds everything and runs the whole test suite (CTest). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --preset default
