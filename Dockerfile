# syntax=docker/dockerfile:1
#
# A `classify` image that runs as a SageMaker (or any Docker) inference container.
#
#   docker build -t classify .
#   docker run -p 8080:8080 -v "$PWD/runs/seed-30:/opt/ml/model:ro" classify serve
#
# SageMaker starts the container as `docker run IMAGE serve` with the model unpacked into
# /opt/ml/model and sends traffic to port 8080. `serve` as the first argument therefore
# runs `classify serve --run /opt/ml/model --host 0.0.0.0 --port 8080`; these environment
# variables override the three (not command-line flags, which clap refuses twice):
#   CLASSIFY_RUN   the run folder            (default /opt/ml/model)
#   CLASSIFY_HOST  the address to listen on  (default 0.0.0.0; 127.0.0.1 for local only)
#   CLASSIFY_PORT  the port                  (default $SAGEMAKER_BIND_TO_PORT, else 8080)
# The server's limits read their own variables (a SageMaker model's Environment sets them):
#   CLASSIFY_MAX_CONNECTIONS, CLASSIFY_HEADER_TIMEOUT, CLASSIFY_BODY_TIMEOUT,
#   CLASSIFY_BODY_MEMORY, CLASSIFY_DECODE_MEMORY, CLASSIFY_THREADS (`classify serve --help`).
# Arguments after `serve` pass through (`serve --max-batch 32 --max-wait-ms 5`). Any other
# first argument runs that classify command (`docker run IMAGE predict --run ... x.png`).
# SIGTERM (`docker stop`) finishes requests in flight, then exits.
#
# Training jobs: SageMaker starts the image as `docker run IMAGE train` with SM_TRAINING_ENV
# set, which `classify train` detects (or pass --sagemaker): hyperparameters from
# /opt/ml/input/config/hyperparameters.json (flag names, e.g. {"epochs": "30", "batch-size":
# "64"}), data from /opt/ml/input/data/training, the run folder to /opt/ml/model, a failure
# reason to /opt/ml/output/failure; SIGTERM stops at the next batch, keeping the last
# checkpoint.

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole package (see .dockerignore): sources, tests, benches and embedded assets, so
# cargo finds every target Cargo.toml names.
COPY . .
RUN cargo build --release --locked --bin classify

FROM debian:bookworm-slim
COPY --from=build /src/target/release/classify /usr/local/bin/classify
COPY --chmod=755 <<'EOF' /usr/local/bin/entrypoint
#!/bin/sh
set -e
if [ "$1" = serve ]; then
    shift
    exec classify serve \
        --run "${CLASSIFY_RUN:-/opt/ml/model}" \
        --host "${CLASSIFY_HOST:-0.0.0.0}" \
        --port "${CLASSIFY_PORT:-${SAGEMAKER_BIND_TO_PORT:-8080}}" \
        "$@"
fi
exec classify "$@"
EOF
RUN useradd --system --no-create-home classify
USER classify
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/entrypoint"]
CMD ["serve"]
