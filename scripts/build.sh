#!/usr/bin/env bash
# Configures and builds tdyn (Release) into build/.
#   scripts/build.sh --mpi   the data-parallel build (-DTDYN_MPI=ON, OpenMPI) into build-mpi/
#                            instead: mpirun -np N build-mpi/tdyn ... (docs/MPI.md)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = "--mpi" ]; then
  cmake -S "$root" -B "$root/build-mpi" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTDYN_MPI=ON -DTDYN_BUILD_BENCH=OFF >/dev/null
  cmake --build "$root/build-mpi" -j "$(nproc)"
  exit
fi
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j "$(nproc)"
