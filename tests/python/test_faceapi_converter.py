#!/usr/bin/env python3
"""The face-api expression net built from its public source equals the reference ONNX.

Runs setup's public route for the `faceapi` model (npm pack @vladmandic/face-api@1.7.15, sha256 of
the tfjs files, scripts/models/convert_faceapi.py) into a temporary directory, then compares the
result with ../shared/models/emotion_faceapi_expression_7.onnx (the tf2onnx build) on every face
of the test photos and on FER2013 crops: probabilities must agree within 1e-4.

Run: .deps/venv/bin/python tests/python/test_faceapi_converter.py   (scripts/test does)
"""
import csv
import importlib.util
import json
import os
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("DEEPEMOTION_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
TOLERANCE = 1e-4


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    ref = load("validate", os.path.join(SHARED, "models", "validate.py"))
    fetch = load("fetch", os.path.join(ROOT, "scripts", "models", "fetch.py"))
    manifest = json.load(open(os.path.join(ROOT, "models", "manifest.json")))
    model = next(m for m in manifest["models"] if m["name"] == "faceapi")

    with tempfile.TemporaryDirectory() as dest:
        print(fetch.fetch(model, dest, mirror=None, required=True))  # the npm route, never the mirror
        converted = ref.FaceApiExpression(os.path.join(dest, model["file"]))
        reference = ref.FaceApiExpression(os.path.join(SHARED, "models", "emotion_faceapi_expression_7.onnx"))
        yunet = ref.YuNet(os.path.join(SHARED, "models", "face_detection_yunet_2023mar.onnx"))

        crops = []
        photos = os.path.join(SHARED, "data", "expressions", "photos")
        for name in sorted(os.listdir(photos)):
            rgb = ref.load_rgb(os.path.join(photos, name))
            crops += [(name, ref.square_crop(rgb, face["box"])) for face in yunet.detect(rgb)]
        rows = list(csv.DictReader(open(os.path.join(SHARED, "data", "expressions", "labels.csv"))))
        for row in [r for r in rows if r["path"].startswith("fer2013_test_subset/")][::17]:
            grey = np.asarray(Image.open(os.path.join(SHARED, "data", "expressions", row["path"])).convert("L"))
            crops.append((row["path"], np.repeat(grey[:, :, None], 3, 2)))

        ours = converted.predict([c for _, c in crops])
        theirs = reference.predict([c for _, c in crops])
        diff = float(np.abs(ours - theirs).max())
        print(f"{len(crops)} faces: max |converted - reference| = {diff:.2e}")

        astronaut = [i for i, (name, _) in enumerate(crops) if name == "astronaut.png"]
        top = converted.LABELS[int(ours[astronaut[0]].argmax())] if astronaut else None
        failures = []
        if diff > TOLERANCE:
            failures.append(f"probabilities differ by {diff:.2e} > {TOLERANCE}")
        if top != "happiness":
            failures.append(f"astronaut.png classified {top}, expected happiness")
        if len(crops) < 30:
            failures.append(f"only {len(crops)} faces compared")
    print("FAILED: " + "; ".join(failures) if failures else "converter OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
