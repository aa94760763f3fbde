"""Throughput of the face sources and the concept tree on one CPU core.

    .venv/bin/python benchmarks/bench_faces.py [--size 256] [--seconds 3]

Prints synthetic faces/s, full FICT mask sets/s (all 141 concepts), label maps/s and photo
landmarks/s (dlib detection + alignment + label map on skimage's astronaut), and writes the numbers
with the machine's details to benchmarks/results/faces.json. Budgets (issue 2): at least 50 synthetic
faces/s and 100 FICT mask sets/s at 256x256.
"""
from __future__ import annotations

import os

# One core: pin the thread pools before numpy and OpenCV start theirs.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from fifa_lab.faces import detect_face, synth_face  # noqa: E402
from fifa_lab.fict import load_tree  # noqa: E402
from fifa_lab.faces.synth import face_landmarks, sample_params  # noqa: E402


def rate(fn, seconds: float) -> tuple[float, int]:
    """Calls per second of ``fn(i)`` over at least ``seconds``, after a warm-up of half as long.

    The warm-up matters: the first calls in a process also pay for growing the allocator's heap,
    which a long dataset build pays once.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < seconds / 2:
        fn(0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(count)
        count += 1
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    tree = load_tree()
    size = args.size
    # Landmarks of varied synthetic faces, so the mask benchmark is not one cached shape.
    shapes = [face_landmarks(sample_params(np.random.default_rng(s)), size) for s in range(64)]

    from skimage.data import astronaut
    photo = astronaut()
    results = {
        "synthetic_faces_per_s": rate(lambda i: synth_face(i, size), args.seconds),
        "fict_mask_sets_per_s": rate(lambda i: tree.masks(shapes[i % 64], (size, size)), args.seconds),
        "label_maps_per_s": rate(lambda i: tree.label_map(shapes[i % 64], (size, size)), args.seconds),
        "photo_landmarks_per_s": rate(lambda i: detect_face(photo, size), args.seconds),
    }
    print(f"one core, {size}x{size}, {len(tree.leaves())} leaves / {len(tree)} concepts")
    for name, (per_s, count) in results.items():
        print(f"  {name:24s} {per_s:8.1f}   ({count} calls, {1000 / per_s:.1f} ms each)")
    out = Path(__file__).resolve().parent / "results" / "faces.json"
    out.parent.mkdir(exist_ok=True)
    record = {"size": size, "threads": 1, "machine": platform.processor() or platform.machine(),
              "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
              **{k: round(v[0], 2) for k, v in results.items()}}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
