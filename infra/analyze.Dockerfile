# syntax=docker/dockerfile:1
# The analysis Lambda as a container image. The Rust binary is the entrypoint and speaks the
# Lambda Runtime API itself (lambda_runtime), so the base is plain Debian; ffmpeg is one static
# binary from PyPI. Build from the repository root, for either architecture (sam build does this
# from template.yaml's Metadata):
#   docker buildx build --platform linux/arm64 -f infra/analyze.Dockerfile -t deepemotion-analyze .
#   docker buildx build --platform linux/amd64 -f infra/analyze.Dockerfile -t deepemotion-analyze .
# scripts/image-test builds it here with buildah (no Docker engine) and invokes it.

ARG RUST_VERSION=1.95
ARG PYTHON_VERSION=3.12
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
# The crate downloads and the build directory persist between builds of the image. This step
# runs only when a source changed, but COPY keeps the files' own times, which can be older than
# the cached build of other contents (an edit made while the previous build ran): cargo would
# then keep the stale build, so the workspace's sources are marked new.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    find shared functions -type f -exec touch {} + \
    && cargo build --release --locked -p analyze \
    && install -D target/release/analyze /out/analyze

# ---- 2. models, the ONNX Runtime library and ffmpeg, each checked against its sha256; the models
#         by the same setup code as scripts/setup.sh
FROM python:${PYTHON_VERSION}-slim-${DEBIAN} AS assets
# A directory laid out like ../shared/models to take the models from (the builder mounts it,
# e.g. `buildah bud --volume DIR:/mirror --build-arg DEEPEMOTION_MODEL_MIRROR=/mirror`); empty:
# their pinned public sources, some of which need npm
ARG DEEPEMOTION_MODEL_MIRROR=
# hadolint ignore=DL3008
RUN if [ -z "$DEEPEMOTION_MODEL_MIRROR" ]; then \
        apt-get update && apt-get install -y --no-install-recommends npm && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY scripts/requirements-engine.txt scripts/requirements-image.txt ./scripts/
RUN pip install --no-cache-dir -r scripts/requirements-engine.txt \
    && pip install --no-cache-dir --no-deps --require-hashes --only-binary=:all: --target /tmp/ffmpeg \
        -r scripts/requirements-image.txt \
    && install -D "$(python -c 'import glob; print(glob.glob("/tmp/ffmpeg/imageio_ffmpeg/binaries/ffmpeg-linux-*")[0])')" \
        /opt/deepemotion/bin/ffmpeg \
    && mkdir -p /opt/deepemotion/lib \
    && python -c "import glob, os, shutil, onnxruntime; lib = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so.*')))[0]; shutil.copy(lib, '/opt/deepemotion/lib/libonnxruntime.so.1')"
COPY models/manifest.json ./models/manifest.json
COPY scripts/models ./scripts/models
RUN python scripts/models/fetch.py --manifest models/manifest.json --dest /opt/deepemotion/models

# ---- 3. the function: the binary, ffmpeg, the models, the library, the CA certificates (the
#         AWS SDK's TLS reads them), on the slim base; nothing written but /tmp
FROM debian:${DEBIAN}-slim
COPY --from=assets /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=assets /opt/deepemotion /opt/deepemotion
COPY --from=build /out/analyze /opt/deepemotion/bin/analyze
ENV DEEPEMOTION_MODELS_DIR=/opt/deepemotion/models \
    ORT_DYLIB_PATH=/opt/deepemotion/lib/libonnxruntime.so.1 \
    DEEPEMOTION_FFMPEG=/opt/deepemotion/bin/ffmpeg
WORKDIR /tmp
USER 1000:1000
ENTRYPOINT ["/opt/deepemotion/bin/analyze"]
