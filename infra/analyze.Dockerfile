# syntax=docker/dockerfile:1
# The analysis Lambda as a container image. The Rust binary is the entrypoint and speaks the
# Lambda Runtime API itself (lambda_runtime), so the base is plain Debian, which ships ffmpeg.
# Build from the repository root, for either architecture (sam build does this from
# template.yaml's Metadata):
#   docker buildx build --platform linux/arm64 -f infra/analyze.Dockerfile -t deepemotion-analyze .
#   docker buildx build --platform linux/amd64 -f infra/analyze.Dockerfile -t deepemotion-analyze .

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# ---- 1. the analysis binary, for the platform being built
FROM rust:${RUST_VERSION}-${DEBIAN} AS build
WORKDIR /src
# the whole workspace: cargo reads every member's manifest and its declared targets
COPY Cargo.toml Cargo.lock ./
COPY shared ./shared
COPY functions ./functions
COPY tests ./tests
COPY benches ./benches
COPY models/manifest.json ./models/manifest.json
RUN cargo build --release --locked -p analyze \
    && install -D target/release/analyze /out/analyze

# ---- 2. models and the ONNX Runtime library, by the same setup code as scripts/setup.sh:
#         pinned sources, each file checked against its sha256
FROM python:3.12-slim-${DEBIAN} AS assets
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/requirements-engine.txt ./scripts/
RUN pip install --no-cache-dir -r scripts/requirements-engine.txt
COPY models/manifest.json ./models/manifest.json
COPY scripts/models ./scripts/models
RUN python scripts/models/fetch.py --manifest models/manifest.json --dest /opt/deepemotion/models \
    && mkdir -p /opt/deepemotion/lib \
    && python -c "import glob, os, shutil, onnxruntime; lib = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so.*')))[0]; shutil.copy(lib, '/opt/deepemotion/lib/libonnxruntime.so.1')"

# ---- 3. the function: ffmpeg from Debian, the binary, the models, the library
FROM debian:${DEBIAN}-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=assets /opt/deepemotion /opt/deepemotion
COPY --from=build /out/analyze /opt/deepemotion/bin/analyze
ENV DEEPEMOTION_MODELS_DIR=/opt/deepemotion/models \
    ORT_DYLIB_PATH=/opt/deepemotion/lib/libonnxruntime.so.1 \
    DEEPEMOTION_FFMPEG=/usr/bin/ffmpeg
USER 1000:1000
ENTRYPOINT ["/opt/deepemotion/bin/analyze"]
