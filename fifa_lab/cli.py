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
        description="Run the notebooks in order with papermill into a run folder; up-to-date notebooks are "
        "skipped. Ends with the key metrics and RUN_DIR/index.html linking the notebooks as HTML and their figures.",
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
    pipeline.add_argument("--timeout", type=float, metavar="SECONDS", help="limit on any single cell's run time")
    pipeline.add_argument(
        "--notebook-timeout", type=float, metavar="SECONDS",
        help="limit on each notebook's whole run time, kernel start included",
    )
    pipeline.add_argument(
        "--notebook-dir", type=Path, metavar="DIR",
        help="read the notebooks from DIR instead of the repository's notebooks/ (e.g. edited copies)",
    )
    pipeline.set_defaults(func=_pipeline)

    train = commands.add_parser(
        "train",
        help="train FiFa-MLLM on a run folder's data (works under `accelerate launch`)",
        description="Train FiFa-MLLM on RUN_DIR/data, writing RUN_DIR/model/ (checkpoints, train_log.jsonl, best/). "
        "A run folder with checkpoints resumes. Multi-GPU: accelerate launch -m fifa_lab.cli train ...",
    )
    train.add_argument("--run-dir", type=Path, required=True, metavar="DIR", help="run folder with data/")
    train.add_argument("--backbone", choices=("tiny", "pretrained"), default="tiny")
    train.add_argument("--vision-path", help="pretrained: local Hugging Face vision model folder")
    train.add_argument("--lm-path", help="pretrained: local Hugging Face causal LM folder (with tokenizer)")
    train.add_argument("--no-lora", action="store_true", help="pretrained: fine-tune the whole LM, no adapters")
    train.add_argument("--lora-rank", type=int, default=8)
    defaults = PROFILES["default"]
    train.add_argument("--steps", type=int, default=defaults["train_steps"])
    train.add_argument("--batch-size", type=int, default=defaults["batch_size"], help="per process")
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--task-ratios", default="Det=2", metavar="'Det=2, RSeg=0'",
                       help="task mixture (missing = 1; the default is fifa_lab.train.trainer.DEFAULT_TASK_RATIOS)")
    train.add_argument("--eval-every", type=int, default=defaults["eval_every"])
    train.add_argument("--eval-samples", type=_sample_count, default=defaults["eval_samples"], metavar="N|all",
                       help="validation samples per metric at each evaluation (default: all)")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_train)
    return parser


def _sample_count(text: str) -> int | None:
    """``--eval-samples``: a positive count, or ``all`` (None: the whole validation split)."""
    if text.strip().lower() == "all":
        return None
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count nor 'all'") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count} is not a positive count (use 'all' for the whole split)")
    return count


def _pipeline(args: argparse.Namespace) -> None:
    run_pipeline(
        profile=args.profile,
        run_dir=args.run_dir,
        parameters=dict(args.parameters),
        # Pipeline order, whatever order --only listed them in.
        notebooks=[name for name in NOTEBOOKS if name in args.only] if args.only else None,
        force=args.force,
        timeout=args.timeout,
        notebook_timeout=args.notebook_timeout,
        notebook_dir=args.notebook_dir,
    )


def _train(args: argparse.Namespace) -> None:
    # lazy: torch and transformers take seconds to import, which `fifa-lab pipeline` does not need
    from fifa_lab.train import TrainConfig, train
    from fifa_lab.train.recipe import ModelChoice, parse_task_ratios, prepare_model

    choice = ModelChoice(backbone=args.backbone, vision_path=args.vision_path, lm_path=args.lm_path,
                         lora=not args.no_lora, lora_rank=args.lora_rank, seed=args.seed)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                         task_ratios=parse_task_ratios(args.task_ratios), eval_every=args.eval_every,
                         eval_samples=args.eval_samples, checkpoint_every=args.eval_every, seed=args.seed,
                         device=args.device, mixed_precision=args.mixed_precision)
    result = train(args.run_dir, prepare_model(args.run_dir, choice), config)
    print(f"trained steps {result['start_step']} -> {result['step']}; best step {result['best_step']} "
          f"(score {result['best_score']}); model: {result['best']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fifa-lab`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (PipelineError, ValueError, FileNotFoundError) as exc:
        print(f"fifa-lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
