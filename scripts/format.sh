#!/usr/bin/env bash
# Formats every C++ file of the project with .clang-format; --check only reports (exit 1) the
# files that differ, without changing them (ctest Style.ClangFormat runs it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mapfile -t files < <(git ls-files 'src/*.cpp' 'src/*.hpp' 'include/*.hpp' 'apps/*.cpp' 'apps/*.hpp' 'tests/*.cpp' \
                                  'tests/*.hpp' 'python/*.cpp' 'bench/*.cpp' 'bench/*.hpp' 'fuzz/*.cpp' 2>/dev/null ||
                     find src include apps tests python bench fuzz -name '*.cpp' -o -name '*.hpp')
if [ "${1:-}" = --check ]; then
  bad="$(clang-format --dry-run "${files[@]}" 2>&1 | grep -o '^[^:]*\.[ch]pp:[0-9]*' | cut -d: -f1 | sort -u || true)"
  [ -z "$bad" ] && exit 0
  sed 's/$/: not clang-formatted (run scripts\/format.sh)/' <<<"$bad" >&2
  exit 1
fi
clang-format -i "${files[@]}"
