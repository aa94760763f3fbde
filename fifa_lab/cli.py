"""The ``fifa-lab`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from fifa_lab.pipeline import NOTEBOOKS, PROFILES, PipelineError, run_pipeline


def parse_parameter(text: str) -> tuple[str, Any]:
    """Parse ``NAME=VALUE``; the value is read as a YAML scalar (int, float, bool, null or string)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if name in ("run_dir", "profile"):
        raise argparse.ArgumentTypeError(f"set {name} with --{name.replace('_', '-')}, not -p")
    return name, _scalar(raw)


def _scalar(raw: str) -> Any:
    if not raw.strip():
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        # YAML 1.1 reads 1e-3 as a string; papermill's -p reads it as a float, and so do we.
        try:
            return float(raw)
        except ValueError:
            return value
    # Lists, mappings and dates stay text: -p takes scalars, as papermill's -p does.
    return value if value is None or isinstance(value, (bool, int, float)) else raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fifa-lab", description="Fine-grained explainable deepfake analysis workbench."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pipeline = commands.add_parser(
        "pipeline",
        help="run the notebooks in order with papermill",
        description="Run the notebooks in order with papermill into a run folder; "
        "up-to-date notebooks are skipped.",
    )
    pipeline.add_argument(
        "--profile", choices=list(PROFILES), default="default", help="parameter profile (default: %(default)s)"
    )
    pipeline.add_argument("--run-dir", type=Path, metavar="DIR", help="run folder (default: runs/<profile>)")
    pipeline.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        action="append",
        default=[],
        type=parse_parameter,
        metavar="NAME=VALUE",
        help="notebook parameter, value read as a YAML scalar; repeatable",
    )
    pipeline.add_argument("--force", action="store_true", help="re-run notebooks that are up to date")
    pipeline.add_argument(
        "--only", nargs="+", choices=NOTEBOOKS, metavar="NOTEBOOK", help="run only these notebooks"
    )
    pipeline.add_argument("--timeout", type=int, metavar="SECONDS", help="limit on any single cell's run time")
    pipeline.set_defaults(func=_pipeline)
    return parser


def _pipeline(args: argparse.Namespace) -> None:
    run_pipeline(
        profile=args.profile,
        run_dir=args.run_dir,
        parameters=dict(args.parameters),
        # Pipeline order, whatever order --only listed them in.
        notebooks=[name for name in NOTEBOOKS if name in args.only] if args.only else None,
        force=args.force,
        timeout=args.timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fifa-lab`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except PipelineError as exc:
        print(f"fifa-lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
