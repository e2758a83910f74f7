#!/bin/bash
# One benchmark window for BENCHMARKS.md: Keras and classify alternated, so that their
# ratios come from the same minutes of a shared machine.
#
#   PY=/path/to/peers/venv/bin/python tools/bench-window.sh OUT NEW [OLD] [ROUNDS]
#
# Each round runs ../shared/peers/keras_seed.py --bench-steps 200, `NEW bench --json`,
# `NEW bench --json --quantize int8` and, if given, `OLD bench --json` (an earlier build),
# writing OUT/keras-R.json, new-R.json, new-int8-R.json and old-R.json. Run it from the
# repository root with ../shared in place and nothing else running.
set -euo pipefail
out=$1; new=$2; old=${3:-}; rounds=${4:-5}
py=${PY:-python3}
mkdir -p "$out"
for round in $(seq 1 "$rounds"); do
  echo "round $round keras $(date -u +%T)"
  "$py" ../shared/peers/keras_seed.py --data ../shared/datasets/cifar10-jpg --bench-steps 200 2>/dev/null | tail -1 > "$out/keras-$round.json"
  echo "round $round classify $(date -u +%T)"
  "$new" bench --json > "$out/new-$round.json"
  "$new" bench --json --quantize int8 > "$out/new-int8-$round.json"
  if [ -n "$old" ]; then
    "$old" bench --json > "$out/old-$round.json"
  fi
done
echo "done $(date -u +%T)"
