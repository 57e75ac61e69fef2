#!/usr/bin/env bash
# Installs the Debian packages gpfq needs (only those missing; apt-get update
# only when something is missing), then configures and builds into build/.
#
#   scripts/setup.sh              # packages + Release build
#   GPFQ_BUILD_DIR=build-asan GPFQ_CMAKE_ARGS="-DGPFQ_SANITIZE=ON" scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config valgrind
  libopenmpi-dev openmpi-bin
  libhdf5-openmpi-dev hdf5-tools
  libopenblas-dev zlib1g-dev libyaml-dev
  clang libclang-rt-14-dev
  dataset-fashion-mnist
  slurm-wlm munge
  python3 python3-h5py python3-numpy python3-pandas python3-matplotlib python3-pytest
  python3-torch python3-torchvision
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi

build_dir=${GPFQ_BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="${GPFQ_BUILD_TYPE:-Release}" ${GPFQ_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
echo "setup: built $build_dir/gpfq"
