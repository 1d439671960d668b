#!/usr/bin/env python3
"""Parity: the Rust engine and the Python reference (../shared/models/validate.py) agree.

On every photo in ../shared/data/expressions/photos, both run YuNet (face_detection_yunet_2023mar,
640x640 letterbox) and the face-api expression net on square crops: boxes must agree within 1 px
and probabilities within 1e-3. On FER2013 crops (no detection) the classifiers alone must agree
within 1e-3, for the face-api net and for mini-Xception.

Run: .deps/venv/bin/python tests/python/test_parity.py   (scripts/test does; needs a built
`deepemotion`, found via DEEPEMOTION_BIN or target/debug/deepemotion)
"""
import csv
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("DEEPEMOTION_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
BIN = os.environ.get("DEEPEMOTION_BIN", os.path.join(ROOT, "target", "debug", "deepemotion"))
MODELS = os.path.join(ROOT, "models")
BOX_TOL_PX = 1.0
PROB_TOL = 1e-3
LABEL_OF = {"anger": "angry", "disgust": "disgust", "fear": "fear", "happiness": "happy",
            "neutral": "neutral", "sadness": "sad", "surprise": "surprised"}


def load_reference():
    spec = importlib.util.spec_from_file_location("validate", os.path.join(SHARED, "models", "validate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rust(*args):
    out = subprocess.run([BIN, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"deepemotion {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def product_probs(model, probs):
    """Python probabilities (model order) keyed by the product's label names."""
    return {LABEL_OF[label]: float(p) for label, p in zip(model.LABELS, probs)}


def main():
    ref = load_reference()
    yunet = ref.YuNet(os.path.join(MODELS, "face_detection_yunet_2023mar.onnx"))
    faceapi = ref.FaceApiExpression(os.path.join(MODELS, "emotion_faceapi_expression_7.onnx"))
    mini = ref.MiniXception(os.path.join(MODELS, "emotion_mini_xception_fer2013_7.onnx"))
    failures = []
    worst_box, worst_prob = 0.0, 0.0

    photos_dir = os.path.join(SHARED, "data", "expressions", "photos")
    photos = sorted(f for f in os.listdir(photos_dir) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    faces_compared = 0
    for name in photos:
        path = os.path.join(photos_dir, name)
        rgb = ref.load_rgb(path)
        py_faces = yunet.detect(rgb)
        doc = json.loads(rust("--detector", "yunet", "--model", "faceapi", "analyze", path))
        rs_faces = doc["frames"][0]["faces"]
        if len(py_faces) != len(rs_faces):
            failures.append(f"{name}: python found {len(py_faces)} faces, rust {len(rs_faces)}")
            continue
        for py in py_faces:
            x1, y1, x2, y2 = py["box"]
            # pair each reference face with the Rust face whose box is closest
            rs = min(rs_faces, key=lambda f: abs(f["box"][0] - x1) + abs(f["box"][1] - y1))
            rx, ry, rw, rh = rs["box"]
            box_err = max(abs(rx - x1), abs(ry - y1), abs(rx + rw - x2), abs(ry + rh - y2))
            worst_box = max(worst_box, box_err)
            probs = product_probs(faceapi, faceapi.predict([ref.square_crop(rgb, py["box"])])[0])
            prob_err = max(abs(rs["emotions"][k] - v) for k, v in probs.items())
            worst_prob = max(worst_prob, prob_err)
            faces_compared += 1
            if box_err > BOX_TOL_PX:
                failures.append(f"{name}: box differs by {box_err:.2f} px")
            if prob_err > PROB_TOL:
                failures.append(f"{name}: probabilities differ by {prob_err:.5f}")
    print(f"[photos] {len(photos)} photos, {faces_compared} faces: max box difference {worst_box:.3f} px, "
          f"max probability difference {worst_prob:.6f}")
    if faces_compared < 10:
        failures.append(f"only {faces_compared} faces compared")

    rows = list(csv.DictReader(open(os.path.join(SHARED, "data", "expressions", "labels.csv"))))
    crops = [os.path.join(SHARED, "data", "expressions", r["path"]) for r in rows
             if r["path"].startswith("fer2013_test_subset/")][::7]
    for model_name, model in (("faceapi", faceapi), ("mini-xception", mini)):
        lines = [json.loads(l) for l in rust("--model", model_name, "classify", *crops).splitlines()]
        worst = 0.0
        for path, line in zip(crops, lines):
            grey = np.asarray(Image.open(path).convert("L"))
            probs = product_probs(model, model.predict([np.repeat(grey[:, :, None], 3, 2)])[0])
            worst = max(worst, max(abs(line["emotions"][k] - v) for k, v in probs.items()))
        print(f"[fer2013] {model_name}: {len(crops)} crops, max probability difference {worst:.6f}")
        if worst > PROB_TOL:
            failures.append(f"{model_name} on FER2013 crops differs by {worst:.5f}")

    print("FAILED: " + "; ".join(failures) if failures else "parity OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
