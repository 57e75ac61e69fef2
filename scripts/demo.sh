#!/usr/bin/env bash
# Sets up (packages + build), then runs the main job on the shipped default
# model and Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
model=${1:-data/models/lenet5_fashion.h5}
build/gpfq info "$model"
echo
build/gpfq eval --model "$model" --dataset fashion-mnist
