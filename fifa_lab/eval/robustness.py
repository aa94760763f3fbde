"""Robustness curves: Det accuracy and Loc mIoU as the test images are compressed, blurred or shrunk.

A detector that reads generator traces loses them as an image is shared; these curves say how fast.
Every test image (already through its own random sharing chain, see :mod:`fifa_lab.forge.post`) goes
through one more operation at each level of a sweep, and the FiFa-MLLM answers the Det and Loc samples
of the same seeded selection at every level (:func:`fifa_lab.eval.runner.predict` with ``perturb``), so
the points of a curve differ only in the perturbation. The expert baselines, when given, are scored on
one seeded subset of the split's images, the same at every level
(:func:`fifa_lab.eval.baselines.evaluate_experts`).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fifa_lab.eval.runner import predict, read_predictions, score
from fifa_lab.forge.post import check_chain

# op -> levels, from mild to harsh; the parameter each level sets is SWEEP_PARAMETER[op].
DEFAULT_SWEEPS: dict[str, list[float]] = {
    "jpeg": [90, 70, 50, 30],
    "blur": [0.5, 1.0, 2.0],
    "resize": [0.75, 0.5, 0.25],
}
SWEEP_PARAMETER = {"jpeg": "quality", "blur": "sigma", "resize": "scale"}
ROBUSTNESS_TASKS = ("Det", "Loc")


def perturbation(op: str, level: float) -> list[dict[str, Any]]:
    """The one-step chain of a sweep point, validated (ValueError names a bad op or level)."""
    if op not in SWEEP_PARAMETER:
        raise ValueError(f"robustness sweeps are over {', '.join(SWEEP_PARAMETER)}, not {op!r}")
    value = int(level) if op == "jpeg" else float(level)
    return check_chain([{"op": op, SWEEP_PARAMETER[op]: value}])


def _mllm_point(model: Any, run_dir: Path, split: str, per_task: int | None, seed: int, max_new_tokens: int,
                chain: list[dict[str, Any]]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fifa-robust-") as scratch:
        path = predict(model, run_dir, split, per_task, seed, max_new_tokens, out=Path(scratch, "p.jsonl"),
                       tasks=ROBUSTNESS_TASKS, perturb=chain)
        scores = score(read_predictions(path), run_dir, split, model.config.image_size, text=False)
    return {"det_acc": scores.get("Det", {}).get("acc", float("nan")),
            "loc_miou": scores.get("Loc", {}).get("miou", float("nan"))}


def robustness_curves(model: Any, run_dir: str | os.PathLike, split: str = "test", *, per_task: int | None = 40,
                      seed: int = 0, max_new_tokens: int = 64, sweeps: Mapping[str, Sequence[float]] | None = None,
                      experts: Mapping[str, Any] | None = None, expert_images: int | None = 100) -> dict[str, Any]:
    """Scores of ``model`` (a loaded :class:`~fifa_lab.model.FiFaMLLM`) on ``split`` as each sweep hardens.

    Args:
        per_task: Det and Loc samples drawn (seeded) from the split, the same ones at every level.
        max_new_tokens: answer length; Det and Loc answers are short.
        sweeps: ``{op: levels}`` over ``jpeg`` (quality), ``blur`` (sigma, pixels) and ``resize`` (scale,
            down and back up); default :data:`DEFAULT_SWEEPS`.
        experts: ``{"detector": ..., "segmenter": ...}`` (models or saved folders) to score beside the
            MLLM, or None.
        expert_images: images of the split the experts are scored on (drawn by ``seed``, the same at
            every level); None for all.

    Returns:
        ``{"clean": point, "sweeps": {op: [{"level": level, **point}, ...]}, "meta": {...}}`` where a point
        is ``{"det_acc", "loc_miou"}`` for the MLLM plus ``"expert_det_acc"``, ``"expert_loc_miou"`` when
        experts are given.
    """
    from fifa_lab.eval.baselines import evaluate_experts

    sweeps = {op: list(levels) for op, levels in (DEFAULT_SWEEPS if sweeps is None else sweeps).items()}
    for op, levels in sweeps.items():
        if not levels:
            raise ValueError(f"sweep {op!r} has no levels")
        for level in levels:
            perturbation(op, level)  # validate everything before the first slow prediction
    run_dir = Path(run_dir)

    def point(chain: list[dict[str, Any]]) -> dict[str, float]:
        out = _mllm_point(model, run_dir, split, per_task, seed, max_new_tokens, chain)
        if experts is not None:
            scores = evaluate_experts(run_dir, split, detector=experts["detector"], segmenter=experts["segmenter"],
                                      perturb=chain, max_images=expert_images, seed=seed)
            out.update(expert_det_acc=scores["det_acc"], expert_loc_miou=scores["loc_miou"])
        return out

    curves = {op: [{"level": level, **point(perturbation(op, level))} for level in levels]
              for op, levels in sweeps.items()}
    return {"clean": point([]), "sweeps": curves,
            "meta": {"split": split, "seed": seed, "per_task": per_task, "tasks": list(ROBUSTNESS_TASKS),
                     "expert_images": expert_images if experts is not None else None,
                     "parameters": {op: SWEEP_PARAMETER[op] for op in sweeps},
                     "applied_after": "each image's own random sharing chain"}}
