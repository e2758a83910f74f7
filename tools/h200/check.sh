#!/usr/bin/env bash
# The GPU checks of BENCHMARKS.md "GPUs", in one device call of about 8 minutes (the device
# tool lends 15 minutes a session, start included): after tools/h200/prepare.sh here,
#   run(command="bash tools/h200/check.sh", carry=[".gpu"], timeout_s=600)
# Everything it measures is printed and written to $OUT (log.txt, *.jsonl, gpu-memory.csv).
#  1. correctness: the fast model trains 1 epoch on wgpu, then its run predicts the same
#     probabilities on wgpu and on the CPU (the largest difference printed, 1e-4 expected)
#  2. classify bench on wgpu: fast at batch 512 and 1024, resnet18 at 224 px (batch 128)
#  3. one timed fast-recipe run, 10 epochs, on the carried CIFAR-10 subset (seeded val split)
#  4. the PyTorch peer in the same call: airbench's network and torchvision's ResNet-18
#     (tools/peers/torch_gpu.py), and airbench94's own recipe on the same images
# DEVICE=cpu, or a run on lavapipe, checks the script itself where there is no GPU; SMALL=1
# shortens every step for that.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/h200-out}"
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
device="${DEVICE:-wgpu}"
small="${SMALL:-0}"
step() { echo; echo "== $* ($(date -u +%T))"; }

step "set-up"
if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES="$icd"; fi
done
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
bin=/tmp/classify-gpu
xz -dc .gpu/classify.xz >"$bin" && chmod +x "$bin"
"$bin" --version
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" 2>/dev/null
export PYTHONPATH=".gpu/py${PYTHONPATH:+:$PYTHONPATH}"
# GPU memory in use, every 250 ms, for the whole call.
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader -lms 250 >"$out/gpu-memory.csv" 2>/dev/null &
sampler=$!
work=/tmp/h200-work
rm -rf "$work" && mkdir -p "$work"

if [ "$small" = 1 ]; then epochs=1 steps=2 infer=256; else epochs=10 steps=20 infer=8192; fi

step "1. correctness: fast, 1 epoch on $device, then predict on $device and cpu"
/usr/bin/time -f "train: %e s, peak RSS %M KB" "$bin" --device "$device" train --model fast --data .gpu/cifar \
    --epochs 1 --out "$work/one" 2>&1 | grep -v XDG_RUNTIME | tail -3
rm -f "$out"/predict-*.jsonl # predict resumes an existing file; these must be this run's
"$bin" --device "$device" predict --run "$work/one" --data .gpu/cifar --top-k 10 --out "$out/predict-device.jsonl" 2>&1 | tail -1
"$bin" --device cpu predict --run "$work/one" --data .gpu/cifar --top-k 10 --out "$out/predict-cpu.jsonl" 2>&1 | tail -1
python3 - "$out/predict-device.jsonl" "$out/predict-cpu.jsonl" <<'PY'
import json, sys
def load(path):
    return {r["image"]: {p["class"]: p["probability"] for p in r["predictions"]} for r in map(json.loads, open(path))}
a, b = load(sys.argv[1]), load(sys.argv[2])
worst = max(abs(a[i][k] - b[i][k]) for i in a for k in a[i])
same = sum(max(a[i], key=a[i].get) == max(b[i], key=b[i].get) for i in a)
print(f"{len(a)} images: largest |p_gpu - p_cpu| = {worst:.2e}; same top class for {same}")
PY

step "2. classify bench on $device"
for args in "--model fast --batch-size 512" "--model fast --batch-size 1024" \
    "--model resnet18 --image-size 224 --batch-size 128"; do
    # shellcheck disable=SC2086
    "$bin" --device "$device" bench $args --steps "$steps" --infer-images "$infer" --json 2>/dev/null \
        | tee -a "$out/classify-bench.jsonl"
done

step "3. the fast recipe, $epochs epochs on $device, on .gpu/cifar ($(find .gpu/cifar -type f | wc -l) images)"
/usr/bin/time -f "wall %e s, peak RSS %M KB" "$bin" --device "$device" train --model fast --data .gpu/cifar \
    --epochs "$epochs" --out "$work/fast" 2>&1 | grep -v XDG_RUNTIME | tail -"$((epochs + 2))"

step "4. PyTorch on the same GPU"
if python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    python3 tools/peers/torch_gpu.py airbench --batch-size 1024 --steps "$steps" | tee -a "$out/torch.jsonl"
    python3 tools/peers/torch_gpu.py resnet18 --batch-size 128 --steps "$steps" | tee -a "$out/torch.jsonl"
    python3 tools/peers/torch_gpu.py record --data .gpu/cifar --val 1000 | tee -a "$out/torch.jsonl"
else
    echo "no CUDA device for PyTorch: skipped"
fi
kill "$sampler" 2>/dev/null
step "done; peak GPU memory in use: $(cut -d, -f2 "$out/gpu-memory.csv" 2>/dev/null | sort -n | tail -1)"
