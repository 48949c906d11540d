#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (packages, data), build, ctest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure -j 1 "$@"
