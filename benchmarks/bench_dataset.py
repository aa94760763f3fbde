"""Cost of building the FiFa datasets as the number of faces grows: time, peak memory, disk.

    .venv/bin/python benchmarks/bench_dataset.py [--faces 50 200] [--num-proc 1] [--out PATH]

Each size is built from scratch in a fresh subprocess (so one size's caches and heap do not leak
into the next) into a temporary run folder. Peak memory is the subprocess's maximum resident set
(``getrusage`` ``ru_maxrss``), and that of its worker processes when ``--num-proc`` > 1. A streaming
build shows time growing linearly with the faces and peak memory staying about flat. Prints a table
and writes the numbers with the machine's details to ``--out`` (default benchmarks/results/dataset.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fifa_lab.io import write_json


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(n_faces: int, num_proc: int, run_dir: Path) -> dict:
    """Build ``n_faces`` in this process and report the cost (run by the subprocess)."""
    from fifa_lab.data import build_dataset, load_datasets

    start = time.perf_counter()
    build_dataset(run_dir, n_faces=n_faces, seed=0, num_proc=num_proc)
    seconds = time.perf_counter() - start
    card = load_datasets(run_dir).card
    # ru_maxrss is in KiB on Linux.
    return {"faces": n_faces, "num_proc": num_proc, "seconds": round(seconds, 2),
            "images": card["totals"]["images"], "samples": card["totals"]["samples"],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_worker_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "disk_mib": round(_folder_bytes(run_dir / "data") / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "dataset.json")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: measure one size
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(measure(args.worker, args.num_proc, args.run_dir)))
        return

    rows = []
    for n_faces in args.faces:
        run_dir = Path(tempfile.mkdtemp(prefix=f"bench-dataset-{n_faces}-"))
        try:
            done = subprocess.run([sys.executable, __file__, "--worker", str(n_faces), "--num-proc",
                                   str(args.num_proc), "--run-dir", str(run_dir)],
                                  check=True, capture_output=True, text=True)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    header = f"{'faces':>6} {'images':>7} {'samples':>8} {'seconds':>8} {'ms/image':>9} {'peak MiB':>9} {'workers MiB':>12} {'disk MiB':>9}"
    print(f"FiFa dataset build, num_proc={args.num_proc}, 256x256, all FiFa-11 tasks")
    print(header)
    for row in rows:
        print(f"{row['faces']:>6} {row['images']:>7} {row['samples']:>8} {row['seconds']:>8.1f} "
              f"{1000 * row['seconds'] / row['images']:>9.1f} {row['peak_rss_mib']:>9.1f} "
              f"{row['peak_worker_rss_mib']:>12.1f} {row['disk_mib']:>9.1f}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"x{last['faces'] / first['faces']:.1f} faces: time x{last['seconds'] / first['seconds']:.2f}, "
              f"peak memory x{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}")
    record = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "python": platform.python_version(), "rows": rows}
    write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
