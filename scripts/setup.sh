#!/usr/bin/env bash
# Installs everything DeepEmotion needs to run and test on this machine, from package registries
# only, and is quick to re-run (each step is skipped when already done):
#   1. ffmpeg                       (Debian apt, when not on PATH)
#   2. a Python venv at .deps/venv  (PyPI: scripts/requirements.txt - onnxruntime, onnx, numpy, pillow;
#                                    a link to a shared cache of environments, scripts/venv.sh)
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

# 2. Python tooling (model conversion, reference implementation for parity tests, AWS stand-ins),
#    linked from the shared environment cache (see scripts/venv.sh)
. "$ROOT/scripts/venv.sh"
venv "$DEPS/venv" -r "$ROOT/scripts/requirements.txt"

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
