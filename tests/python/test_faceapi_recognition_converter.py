#!/usr/bin/env python3
"""The face-api FaceRecognitionNet embedder built from its public source equals the original.

Runs setup's public route for the `faceapi-recognition` model (npm pack @vladmandic/face-api@1.7.15,
sha256 of the tfjs weights and manifest, scripts/models/convert_faceapi_recognition.py) into a
temporary directory - never the mirror - and checks the ONNX file's interface against
models/manifest.json. Then it describes real faces - every face of the test photos and of the test
videos sampled once a second, found by YuNet (../shared/models/validate.py) and aligned as the
engine aligns them (scripts/models/measure_embeddings.py's align() with the manifest's size and
template_scale), plus a few at other template scales and three synthetic crops (black, white,
noise) - with onnxruntime, fed the manifest's normalisation, and with a reference run of the
ORIGINAL network: @vladmandic/face-api's own FaceRecognitionNet code loading the same npm files
from disk, on TensorFlow.js's WebAssembly backend (shipped in its npm package), fed the uint8 crops and normalising them
itself (tests/python/faceapi_recognition_reference.mjs; packages pinned in
tests/python/tfjs-reference, installed there with `npm ci` when missing). Descriptors must agree
within 1e-4, so the converter and the manifest's input normalisation are both checked.

Run: .deps/venv/bin/python tests/python/test_faceapi_recognition_converter.py   (scripts/test does)
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("DEEPEMOTION_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE_DIR = os.path.join(HERE, "tfjs-reference")
TOLERANCE = 1e-4


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def faceapi_reference(model_dir, crops, tmp):
    """Descriptors [N,128] of the uint8 crops [N,150,150,3] from the original face-api code."""
    needed = [("@vladmandic", "face-api", "dist", "face-api.node-wasm.js"), ("@tensorflow", "tfjs", "package.json"),
              ("@tensorflow", "tfjs-backend-wasm", "package.json")]
    if not all(os.path.isfile(os.path.join(REFERENCE_DIR, "node_modules", *p)) for p in needed):
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=REFERENCE_DIR, check=True, timeout=900)
    inputs, outputs = os.path.join(tmp, "faces.u8"), os.path.join(tmp, "descriptors.f32")
    np.ascontiguousarray(crops, np.uint8).tofile(inputs)
    run = subprocess.run(["node", os.path.join(HERE, "faceapi_recognition_reference.mjs"), model_dir, inputs,
                          str(len(crops)), outputs], capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise SystemExit(f"face-api reference run failed:\n{run.stdout}{run.stderr}")
    info = json.loads(run.stdout.strip().splitlines()[-1])
    return np.fromfile(outputs, "<f4").reshape(len(crops), info["dims"]), info


def main():
    ref = load("validate", os.path.join(SHARED, "models", "validate.py"))
    fetch = load("fetch", os.path.join(ROOT, "scripts", "models", "fetch.py"))
    study = load("measure_embeddings", os.path.join(ROOT, "scripts", "models", "measure_embeddings.py"))
    manifest = json.load(open(os.path.join(ROOT, "models", "manifest.json")))
    model = next(m for m in manifest["models"] if m["name"] == study.MODEL)
    spec = model["embedder"]
    size = spec["size"]
    failures = []

    with tempfile.TemporaryDirectory() as dest, tempfile.TemporaryDirectory() as tmp:
        print(fetch.fetch(model, dest, mirror=None, required=True))  # the npm route, never the mirror
        sess = study.session(os.path.join(dest, model["file"]))
        (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
        if (inp.name, inp.shape[1:], out.name, out.shape[1:]) != (spec["input"], [size, size, 3],
                                                                 spec["output"], [spec["dims"]]):
            failures.append(f"ONNX interface {inp.name}{inp.shape} -> {out.name}{out.shape} does not match the manifest")
        if isinstance(inp.shape[0], int) or isinstance(out.shape[0], int):
            failures.append(f"batch dimension is not dynamic: {inp.shape} -> {out.shape}")

        yunet = ref.YuNet(os.path.join(SHARED, "models", "face_detection_yunet_2023mar.onnx"))
        engine = study.geometry(spec.get("template_scale", 1.0), spec.get("template_shift", (0.0, 0.0)))
        others = [study.geometry(0.75), study.geometry(*study.dlib_chip_geometry())]
        faces = study.collect_faces(ref, yunet, size, [engine] + others, fps=1.0)
        rs = np.random.RandomState(0)
        crops = np.stack([f["crops"][engine] for f in faces]
                         + [f["crops"][others[k % 2]] for k, f in enumerate(faces[::6])]
                         + [np.zeros((size, size, 3)), np.full((size, size, 3), 255.0),
                            rs.randint(0, 256, (size, size, 3))]).astype(np.float32)
        if not np.array_equal(crops, np.round(crops)) or crops.min() < 0 or crops.max() > 255:
            failures.append("aligned crops are not whole 0..255 pixel values")

        ours = study.embed(sess, study.normalise(crops, spec["pixel_scale"], spec["mean"], spec["std"]))
        original = fetch.npm_sources(model, tmp)  # the npm files again (npm's cache), sha256-checked
        model_dir = os.path.dirname(original["manifest"])
        started = time.perf_counter()
        theirs, info = faceapi_reference(model_dir, crops.astype(np.uint8), tmp)
        print(f"face-api reference: face-api {info['faceapi']}, tfjs {info['tfjs']} backend {info['backend']}, "
              f"{len(crops)} crops in {time.perf_counter() - started:.1f} s")
        diff = float(np.abs(ours - theirs).max())
        norms = np.linalg.norm(theirs, axis=1)
        print(f"{len(faces)} faces ({sum(' t=' in f['source'] for f in faces)} from videos), {len(crops)} crops: max |onnx - face-api| = {diff:.2e}; descriptor dims "
              f"{ours.shape[1]}, L2 norms {norms.min():.3f}..{norms.max():.3f}")

    if diff > TOLERANCE:
        failures.append(f"descriptors differ by {diff:.2e} > {TOLERANCE}")
    if ours.shape[1] != spec["dims"]:
        failures.append(f"{ours.shape[1]} dims, the manifest says {spec['dims']}")
    if len(faces) < 40:
        failures.append(f"only {len(faces)} faces compared")
    print("FAILED: " + "; ".join(failures) if failures else "converter OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
