"""Forgeries per second for every method, and forge + annotate images per second, on one CPU core.

    .venv/bin/python benchmarks/bench_forge.py [--size 256] [--seconds 1]

Faces and the face-swap donor pool are rendered beforehand (a dataset build renders each donor once and
reuses it), so the numbers are the forging (and annotating) cost alone; results go to
benchmarks/results/forge.json. The issue's aim is forge + annotate at >= 20 images/s per core.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from fifa_lab.annotate import annotate  # noqa: E402
from fifa_lab.faces import synth_face  # noqa: E402
from fifa_lab.forge import METHODS, forge  # noqa: E402
from fifa_lab.forge.swap import DONOR_POOL, DONOR_SEED_BASE, donor_face  # noqa: E402
from fifa_lab.io import write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    faces = [synth_face(seed, args.size) for seed in range(16)]
    for k in range(DONOR_POOL):
        donor_face(DONOR_SEED_BASE + k, args.size)
    rates: dict[str, float] = {}
    for name, spec in METHODS.items():
        usable = []
        for face in faces:
            try:
                forge(face, spec.forgery_class, name, seed=0)  # warm-up (donor cache, first allocations)
                usable.append(face)
            except ValueError:
                continue
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            forge(usable[count % len(usable)], spec.forgery_class, name, seed=count)
            count += 1
        rates[name] = count / (time.perf_counter() - start)
        print(f"  {spec.forgery_class:3s} {name:16s} {rates[name]:7.1f}/s  ({1000 / rates[name]:.1f} ms)")
    per_class = {c: float(np.mean([1 / r for n, r in rates.items() if METHODS[n].forgery_class == c]))
                 for c in ("FS", "FR", "FE", "EFS")}
    print("mean ms per forgery by class:", {c: round(1000 * t, 1) for c, t in per_class.items()})

    # The dataset path: a forgery of a class drawn per image, then the annotator on (fake, real).
    classes = ("FS", "FR", "FE", "EFS")
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < 4 * args.seconds:
        face = faces[count % len(faces)]
        fake = forge(face, classes[count % 4], seed=count, post="random")
        annotate(fake.fake, fake.real, landmarks=fake.landmarks)
        count += 1
    pipeline_rate = count / (time.perf_counter() - start)
    print(f"forge + annotate: {pipeline_rate:.1f} images/s ({1000 / pipeline_rate:.1f} ms each)")
    write_json(Path(__file__).resolve().parent / "results" / "forge.json",
               {"size": args.size, "threads": 1, "per_method_per_s": rates,
                "per_class_ms": {c: 1000 * t for c, t in per_class.items()},
                "forge_annotate_per_s": pipeline_rate})


if __name__ == "__main__":
    main()
