#!/bin/bash
# One benchmark window for BENCHMARKS.md's "CPU speed" table: the `fast` model in classify
# (fp32 and --precision bf16) and airbench's network in PyTorch (fp32 and bf16 autocast),
# alternated so that every ratio comes from the same minutes of a shared machine.
#
#   PY=/path/to/peers/venv/bin/python tools/bench-fast-window.sh OUT CLASSIFY [ROUNDS] [BATCH]
#
# Each round writes OUT/classify-fp32-R.json, classify-bf16-R.json, torch-fp32-R.json and
# torch-bf16-R.json. Run it from the repository root with ../shared in place and nothing
# else running; `lscpu` goes to OUT/cpu.txt.
set -euo pipefail
out=$1; classify=$2; rounds=${3:-3}; batch=${4:-256}
py=${PY:-python3}
mkdir -p "$out"
lscpu > "$out/cpu.txt"
for round in $(seq 1 "$rounds"); do
  for precision in fp32 bf16; do
    echo "round $round classify $precision $(date -u +%T)"
    "$classify" bench --model fast --batch-size "$batch" --steps 10 --infer-images 1024 --latency-calls 2 \
      --precision "$precision" --json > "$out/classify-$precision-$round.json"
  done
  for precision in fp32 bf16; do
    echo "round $round torch $precision $(date -u +%T)"
    flag=(); [ "$precision" = bf16 ] && flag=(--bf16)
    "$py" ../shared/peers/torch_fast.py --batch-size "$batch" --steps 10 --infer-images 1024 "${flag[@]}" \
      2>/dev/null | tail -1 > "$out/torch-$precision-$round.json"
  done
done
echo "done $(date -u +%T)"
