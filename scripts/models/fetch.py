#!/usr/bin/env python3
"""Put every model of models/manifest.json into models/, each checked by sha256.

For each model, in order:
  1. already in the destination with an accepted sha256 -> nothing to do;
  2. a mirror directory (--mirror, default $DEEPEMOTION_MODEL_MIRROR) holds it -> copy;
  3. its pinned public source: "url" (download), "npm" (npm pack, check the source files' sha256,
     convert); "mirror_only" models are optional and skipped with a note.
An "npm" model's source files ("files": {role: [path in the package, sha256]}) are taken from the
mirror's copy of the package when it has one - <mirror>/source/<name>-<version>/<file name>, e.g.
source/face-api-1.7.15/face_recognition_model.bin for @vladmandic/face-api@1.7.15 model/face_recognition_model.bin,
each checked against the same pinned sha256 (all of a model's files or none) - and otherwise from
`npm pack`. Either way the converter ("convert") then runs as
  convert.py --<role> <file> (one per entry of "files", in order) --out <onnx>
and its output must have one of the model's sha256.
One line per model. Non-zero exit, naming the model, route and reason, if a required model fails.

Usage: fetch.py [--dest models] [--mirror DIR] [NAME ...]   (names: only these, and required)
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FetchError(Exception):
    pass


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def accepted(path, model):
    return os.path.isfile(path) and sha256(path) in model["sha256"]


def install(tmp_file, dest_file, model, route):
    digest = sha256(tmp_file)
    if digest not in model["sha256"]:
        raise FetchError(f"{route}: got sha256 {digest}, expected one of {model['sha256']}")
    os.makedirs(os.path.dirname(dest_file), exist_ok=True)
    shutil.copyfile(tmp_file, dest_file + ".part")
    os.replace(dest_file + ".part", dest_file)  # never leave a half-written model behind


def from_url(model, dest_file, tmp):
    url = model["source"]["url"]
    target = os.path.join(tmp, model["file"])
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(target, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        raise FetchError(f"download {url}: {e}") from e
    install(target, dest_file, model, f"download {url}")


def npm_package_dir(spec):
    """'@scope/name@1.2.3' -> 'name-1.2.3': the mirror's folder for that package's files."""
    name, _, version = spec.rpartition("@")
    return f"{name.rpartition('/')[2]}-{version}"


def mirror_sources(model, mirror, tmp):
    """The model's npm source files from <mirror>/source/<name>-<version>/, if all are there with
    their pinned sha256 (copied into tmp); None otherwise."""
    if not mirror:
        return None
    source = model["source"]
    folder = os.path.join(mirror, "source", npm_package_dir(source["npm"]))
    paths = {}
    for role, (member, digest) in source["files"].items():
        found = os.path.join(folder, os.path.basename(member))
        if not os.path.isfile(found) or sha256(found) != digest:
            return None
        paths[role] = os.path.join(tmp, os.path.basename(member))
        shutil.copyfile(found, paths[role])
    return paths


def npm_sources(model, tmp):
    """The model's source files from `npm pack` of the pinned package, each checked by sha256."""
    source = model["source"]
    spec = source["npm"]
    try:
        out = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", tmp],
                             capture_output=True, text=True, check=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as e:
        raise FetchError(f"npm pack {spec}: {getattr(e, 'stderr', '') or e}") from e
    tarball = os.path.join(tmp, out.stdout.strip().splitlines()[-1])
    paths = {}
    with tarfile.open(tarball) as tar:
        for role, (member, digest) in source["files"].items():
            target = os.path.join(tmp, os.path.basename(member))
            with tar.extractfile("package/" + member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            if sha256(target) != digest:
                raise FetchError(f"npm {spec}: {member} has sha256 {sha256(target)}, pinned {digest}")
            paths[role] = target
    os.remove(tarball)
    return paths


def from_npm(model, dest_file, tmp, mirror=None):
    """Source files (mirror copy of the package, else npm pack) -> converter -> sha256-checked model.
    Returns where the source files came from."""
    source = model["source"]
    paths = mirror_sources(model, mirror, tmp)
    origin = f"mirror copy of npm {source['npm']}" if paths else f"npm {source['npm']}"
    if paths is None:
        paths = npm_sources(model, tmp)
    converted = os.path.join(tmp, model["file"])
    command = [sys.executable, os.path.join(ROOT, source["convert"])]
    for role in source["files"]:
        command += [f"--{role}", paths[role]]
    subprocess.run(command + ["--out", converted], check=True)
    install(converted, dest_file, model, f"{origin} + {source['convert']}")
    return origin


def fetch(model, dest, mirror, required):
    dest_file = os.path.join(dest, model["file"])
    name = model["name"]
    if accepted(dest_file, model):
        return f"{name}: ok ({model['file']})"
    if mirror and accepted(os.path.join(mirror, model["file"]), model):
        install(os.path.join(mirror, model["file"]), dest_file, model, "mirror")
        return f"{name}: copied from mirror {mirror}"
    source = model.get("source", {})
    with tempfile.TemporaryDirectory() as tmp:
        if "url" in source:
            from_url(model, dest_file, tmp)
            return f"{name}: downloaded from {source['url']}"
        if "npm" in source:
            origin = from_npm(model, dest_file, tmp, mirror)
            return f"{name}: built from {origin}"
    if required:
        raise FetchError(f"only available from a mirror (set DEEPEMOTION_MODEL_MIRROR): {source.get('mirror_only')}")
    return f"{name}: skipped, optional and only available from a mirror (set DEEPEMOTION_MODEL_MIRROR)"


def main():
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dest", default=os.path.join(ROOT, "models"))
    ap.add_argument("--mirror", default=os.environ.get("DEEPEMOTION_MODEL_MIRROR") or None)
    ap.add_argument("--manifest", default=os.path.join(ROOT, "models", "manifest.json"))
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    models = json.load(open(a.manifest))["models"]
    unknown = set(a.names) - {m["name"] for m in models}
    if unknown:
        raise SystemExit(f"fetch.py: unknown model(s) {sorted(unknown)}")
    failed = False
    for model in models:
        if a.names and model["name"] not in a.names:
            continue
        try:
            print("models: " + fetch(model, a.dest, a.mirror, required=bool(a.names)), flush=True)
        except (FetchError, subprocess.CalledProcessError, OSError) as e:
            print(f"models: {model['name']}: FAILED: {e}", file=sys.stderr, flush=True)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
