"""The peer of scripts/bench-throughput: the Python `fer` library (Haar cascade + mini-Xception on
TensorFlow) on a video, the way its users run it.

    python scripts/bench_fer_peer.py CLIP [--fps 5]

Reads every frame with OpenCV and runs `FER().detect_emotions` on each frame (or, with --fps, on
the first frame of each 1/fps slot of video time, as deepemotion samples). Only the loop is timed:
the import of TensorFlow and the model load are excluded, in fer's favour. Prints one JSON line:
frames read, frames analysed, faces found, loop seconds. Run it in the venv of
scripts/requirements-fer.txt plus `pip install --no-deps fer==25.10.3`.
"""
import argparse, json, math, os, sys, time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import cv2  # noqa: E402
from fer.fer import FER  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("clip")
    p.add_argument("--fps", type=float, default=0.0, help="frames per second to analyse (0: every frame)")
    args = p.parse_args()
    detector = FER()
    # one warm-up call on the first frame, outside the timed loop: TensorFlow builds its graph then
    video = cv2.VideoCapture(args.clip)
    ok, frame = video.read()
    if not ok:
        sys.exit(f"bench_fer_peer: cannot read {args.clip}")
    detector.detect_emotions(frame)
    video.release()

    video = cv2.VideoCapture(args.clip)
    read = analysed = faces = 0
    last_slot = None
    started = time.perf_counter()
    while True:
        ok, frame = video.read()
        if not ok:
            break
        read += 1
        if args.fps > 0:
            slot = math.floor(video.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 * args.fps + 1e-4)
            if slot == last_slot:
                continue
            last_slot = slot
        faces += len(detector.detect_emotions(frame))
        analysed += 1
    seconds = time.perf_counter() - started
    print(json.dumps({"read": read, "analysed": analysed, "faces": faces, "seconds": round(seconds, 4)}))


if __name__ == "__main__":
    main()
