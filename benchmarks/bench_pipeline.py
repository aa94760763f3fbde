"""End-to-end time of the notebook pipeline on one profile, against its budget on a 2-core CPU.

    .venv/bin/python benchmarks/bench_pipeline.py [--profile smoke] [--run-dir DIR] [--out PATH]

Runs every notebook with ``--force`` into a fresh run folder (a temporary one, removed afterwards,
unless ``--run-dir`` is given), so nothing is skipped as up to date. Prints the seconds of each notebook
and the total wall time, index included, against the budget (smoke 180 s, default 1500 s; full has
none), and writes the numbers with the machine's details to ``--out`` (default
benchmarks/results/pipeline-<profile>.json).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from fifa_lab.io import write_json
from fifa_lab.pipeline import PROFILES, run_pipeline

BUDGET_SECONDS = {"smoke": 180, "default": 1500}
"""Wall-clock budget of a whole pipeline run per profile on the reference 2-core machine."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=list(PROFILES), default="smoke")
    parser.add_argument("--run-dir", type=Path, help="run folder to keep (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="JSON file (default: benchmarks/results/pipeline-<profile>.json)")
    args = parser.parse_args()
    out = args.out or Path(__file__).resolve().parent / "results" / f"pipeline-{args.profile}.json"
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix=f"bench-pipeline-{args.profile}-"))

    start = time.perf_counter()
    try:
        result = run_pipeline(args.profile, run_dir=run_dir, force=True, log=print)
        total = time.perf_counter() - start
    finally:
        if args.run_dir is None:
            shutil.rmtree(run_dir, ignore_errors=True)

    budget = BUDGET_SECONDS.get(args.profile)
    width = max(map(len, [*result.durations, "total (index, kernels included)"]))
    print(f"fifa-lab pipeline, profile {args.profile}, {os.cpu_count()} CPUs")
    for name, seconds in result.durations.items():
        print(f"  {name:<{width}}  {seconds:7.1f} s")
    for name in result.missing:
        print(f"  {name:<{width}}  (no notebook yet)")
    print(f"  {'total (index, kernels included)':<{width}}  {total:7.1f} s")
    if budget is None:
        print(f"no budget for profile {args.profile}")
    else:
        verdict = "within" if total <= budget else "OVER"
        print(f"budget {budget} s: {verdict} ({100 * total / budget:.0f}% used)")
    write_json(out, {"profile": args.profile, "machine": platform.processor() or platform.machine(),
                     "cpus": os.cpu_count(), "python": platform.python_version(),
                     "load_average_1min": os.getloadavg()[0], "notebooks": result.durations,
                     "missing": result.missing, "total_seconds": round(total, 1), "budget_seconds": budget})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
