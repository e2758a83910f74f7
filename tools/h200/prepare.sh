#!/usr/bin/env bash
# Prepares, on this machine, what tools/h200/check.sh needs on the device machine (an H200
# with PyTorch, no Rust, no network), in .gpu/ (ignored through .git/info/exclude), under the
# 64 MiB a device call carries:
#   .gpu/classify.xz   the wgpu build of classify, stripped and compressed (~23 MB)
#   .gpu/debs/         the Vulkan loader (libvulkan1), which that machine may lack
#   .gpu/py/airbench/  airbench 0.1.8 from PyPI (its sources; pure Python)
#   .gpu/cifar/        a seeded CIFAR-10 subset as JPEG class folders, PER_CLASS a class
#                      (default 800: 8,000 images, ~31 MB), from ../shared/datasets
# Then, with the device tool: run(command="bash tools/h200/check.sh", carry=[".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/classify-ci-target}"
per_class="${PER_CLASS:-800}"
cifar="${CIFAR_JPEG:-../shared/datasets/cifar10-jpg/train}"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
mkdir -p .gpu/debs .gpu/py

cargo build --release --locked --features wgpu
objcopy --strip-all "$CARGO_TARGET_DIR/release/classify" .gpu/classify
xz -T2 -6 -f .gpu/classify

# The Vulkan loader, for amd64 whatever this machine is (as the device tool's README shows).
lists="$(mktemp -d)"
mkdir -p "$lists/partial"
apt_amd64=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${apt_amd64[@]}" update -qq
(cd .gpu/debs && apt-get "${apt_amd64[@]}" download libvulkan1)
rm -rf "$lists"

work="$(mktemp -d)"
python3 -m pip download --quiet --no-deps --no-binary=:all: --dest "$work" airbench==0.1.8
tar -xzf "$work"/airbench-0.1.8.tar.gz -C "$work"
rm -rf .gpu/py/airbench && cp -r "$work/airbench-0.1.8/airbench" .gpu/py/airbench
rm -rf "$work"

# PER_CLASS images of each class, chosen by a seeded shuffle of the sorted file names.
rm -rf .gpu/cifar
python3 - "$cifar" .gpu/cifar "$per_class" <<'PY'
import pathlib, random, shutil, sys
source, target, per_class = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
for folder in sorted(p for p in source.iterdir() if p.is_dir()):
    files = sorted(folder.iterdir())
    random.Random(f"h200-{folder.name}").shuffle(files)
    (target / folder.name).mkdir(parents=True)
    for f in files[:per_class]:
        shutil.copyfile(f, target / folder.name / f.name)
PY
du -sh .gpu
