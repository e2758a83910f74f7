#!/usr/bin/env bash
# Load test of `classify serve` on loopback: one JPEG per request to POST /invocations,
# at concurrency 1, 16 and 64, for each --max-batch given; prints wrk's requests/s and
# latency percentiles. Bounded: DURATION seconds per level; the server it starts is stopped
# (SIGTERM) at the end. Needs `wrk` (Debian: apt-get install wrk) and a release build.
#
#   benches/serve/load.sh RUN_DIR JPEG_DIR [MAX_BATCH...]
#   DURATION=20 benches/serve/load.sh /tmp/seed30 /data/cifar10-jpg/train 1 64
#
# JPEG_DIR is searched for *.jpg (every 50th in name order, at most 1,000). Environment: DURATION (default
# 15), PORT (18080), LEVELS ("1 16 64"), MAX_WAIT_MS (2), CLASSIFY (target/release/classify).
set -euo pipefail
cd "$(dirname "$0")/../.."
run=${1:?usage: load.sh RUN_DIR JPEG_DIR [MAX_BATCH...]}
jpegs=${2:?usage: load.sh RUN_DIR JPEG_DIR [MAX_BATCH...]}
shift 2
batches=("${@:-64}")
duration=${DURATION:-15}
port=${PORT:-18080}
levels=${LEVELS:-"1 16 64"}
max_wait=${MAX_WAIT_MS:-2}
classify=${CLASSIFY:-target/release/classify}
url="http://127.0.0.1:$port"

list=$(mktemp)
server=""
cleanup() {
    [ -n "$server" ] && kill -TERM "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -f "$list"
}
trap cleanup EXIT
# "images batches" so far, from the server's batch-size histogram.
batch_totals() {
    curl -s "$url/metrics" | awk '/^classify_batch_size_images_sum/ {s = $2} /^classify_batch_size_images_count/ {c = $2} END {print s + 0, c + 0}'
}
# Every 50th file in name order: a spread over the classes, at most 1,000 files.
find "$jpegs" -name '*.jpg' | sort | awk 'NR % 50 == 1 && n++ < 1000' > "$list"
echo "$(wc -l < "$list") JPEGs from $jpegs; run $run; ${duration}s per level; $(nproc) cores"

for batch in "${batches[@]}"; do
    "$classify" serve --run "$run" --host 127.0.0.1 --port "$port" --max-batch "$batch" --max-wait-ms "$max_wait" &
    server=$!
    for _ in $(seq 100); do
        curl -sf "$url/ping" >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -sf "$url/ping" >/dev/null || { echo "server did not come up" >&2; exit 1; }
    # Warm-up, not reported.
    JPEG_LIST=$list wrk -t1 -c4 -d3s -s benches/serve/post_jpeg.lua "$url" >/dev/null
    for c in $levels; do
        threads=$(( c < 2 ? 1 : 2 ))
        echo "== --max-batch $batch --max-wait-ms $max_wait, concurrency $c"
        read -r images0 batches0 < <(batch_totals)
        JPEG_LIST=$list wrk -t"$threads" -c"$c" -d"${duration}s" --latency --timeout 10s \
            -s benches/serve/post_jpeg.lua "$url" \
            | grep -E "Requests/sec|^ +(50|90|99)%|errors:|requests in"
        read -r images1 batches1 < <(batch_totals)
        awk -v i=$((images1 - images0)) -v b=$((batches1 - batches0)) \
            'BEGIN {if (b > 0) printf "mean batch: %.1f images (%d forward passes)\n", i / b, b}'
    done
    kill -TERM "$server"
    wait "$server" || true
    server=""
done
