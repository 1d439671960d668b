#!/usr/bin/env bash
# Installs everything DeepEmotion needs to run and test on this machine, from package registries
# only, and is quick to re-run (each step is skipped when already done):
#   1. ffmpeg                       (Debian apt, when not on PATH)
#   2. a Python venv in .deps/venv  (PyPI: scripts/requirements.txt - onnxruntime, onnx, numpy, pillow)
#   3. the ONNX Runtime library     (.deps/lib/libonnxruntime.so.1, from the onnxruntime wheel)
#   4. the models                   (models/*.onnx: from $DEEPEMOTION_MODEL_MIRROR when set - by
#                                    default the team's ../shared/models when it exists - else
#                                    their pinned public sources; sha256-checked)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
log() { printf 'setup: %s\n' "$*" >&2; }

# 1. ffmpeg
if ! command -v ffmpeg >/dev/null 2>&1; then
  log "installing ffmpeg (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; }
fi

# 2. Python tooling (model conversion, reference implementation for parity tests, AWS stand-ins)
REQ="$ROOT/scripts/requirements.txt"
STAMP="$DEPS/venv/.requirements.sha256"
want="$(cat "$REQ" "$ROOT/scripts/requirements-engine.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$DEPS/venv/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "creating Python venv in .deps/venv"
  python3 -m venv "$DEPS/venv"
  "$DEPS/venv/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  echo "$want" > "$STAMP"
fi

# 3. ONNX Runtime shared library for `ort` (load-dynamic): the one inside the onnxruntime wheel.
if [ ! -e "$DEPS/lib/libonnxruntime.so.1" ]; then
  lib="$("$DEPS/venv/bin/python" - <<'PY'
import glob, os, onnxruntime
print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*")))[0])
PY
)"
  mkdir -p "$DEPS/lib"
  cp "$lib" "$DEPS/lib/"
  ln -sf "$(basename "$lib")" "$DEPS/lib/libonnxruntime.so.1"
  log "ONNX Runtime library: $DEPS/lib/$(basename "$lib")"
fi

# 4. Models
if [ -z "${DEEPEMOTION_MODEL_MIRROR:-}" ] && [ -d "$ROOT/../shared/models" ]; then
  export DEEPEMOTION_MODEL_MIRROR="$(cd "$ROOT/../shared/models" && pwd)"
fi
"$DEPS/venv/bin/python" "$ROOT/scripts/models/fetch.py" --dest "$ROOT/models" >&2
