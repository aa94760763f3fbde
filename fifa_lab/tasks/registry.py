"""The task registry: what a FiFa task asks, how its samples are built and how it is scored.

A :class:`Task` turns one image record into instruction samples. A sample is a dict that fits
:data:`SAMPLE_FEATURES`:

``sample_id``     ``"<image_id>/<task>/<k>"``
``image_id``      the record it was built from (join on it, or on ``image_index`` within the same split)
``image_index``   row of that record in its split of the image dataset (-1 when built outside a dataset)
``task``          task id (``Det``, ``AGE``, ...)
``prompt``        the instruction; contains ``<image>`` and, for region tasks, ``<region>``
``target``        the answer; grounded answers use ``<p>phrase</p> [SEG]`` (AGE convention)
``target_masks``  one RLE per ``[SEG]`` of the target, in order
``region``        ``None`` or ``{kind: concept|mask|box, concept, mask, box}``: what ``<region>`` stands for
                  (``concept``: the FICT id and its visible mask; ``mask``: an RLE; ``box``: ``[x0, y0, x1, y1]``)
``split``         the record's split
``meta``          JSON string for analysis, never shown to a model (template index, region concept, ...)

Add a task with :func:`register_task`; :mod:`fifa_lab.tasks.fifa11` registers the eleven of DESIGN.md.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Features, List, Value

from fifa_lab.data.records import RLE_FEATURE

IMAGE_TOKEN = "<image>"
REGION_TOKEN = "<region>"
SEG_TOKEN = "[SEG]"
GRANULARITIES = ("image", "region", "box", "concept")
REGION_KINDS = ("concept", "mask", "box")

SAMPLE_FEATURES = Features({
    "sample_id": Value("string"),
    "image_id": Value("string"),
    "image_index": Value("int64"),
    "task": Value("string"),
    "prompt": Value("string"),
    "target": Value("string"),
    "target_masks": List(RLE_FEATURE),
    "region": {"kind": Value("string"), "concept": Value("string"), "mask": RLE_FEATURE,
               "box": List(Value("int32"))},  # [x0, y0, x1, y1]; see RLE_FEATURE on why not length=4
    "split": Value("string"),
    "meta": Value("string"),
})

Builder = Callable[..., list[dict[str, Any]]]
_FIELD = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Task:
    """One instruction task.

    Attributes:
        id: short id used in datasets and ``metrics.json`` (``"R-Det"``).
        granularity: ``image``, ``region``, ``box`` or ``concept`` (DESIGN's FiFa-11 table).
        description: one line on what is asked and answered.
        templates: several phrasings of the prompt; each holds ``<image>``, region tasks also
            ``<region>``; ``{name}`` fields are filled by the builder (see :meth:`prompt`).
        build: ``build(record, rng, tree=None) -> [sample, ...]`` for one image record.
        metrics: names of the metrics the evaluation reports for it.
        uses_region: whether prompts refer to a region (``<region>`` in every template).
    """

    id: str
    granularity: str
    description: str
    templates: tuple[str, ...]
    build: Builder
    metrics: tuple[str, ...]
    uses_region: bool = False

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"task {self.id}: granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if len(self.templates) < 2:
            raise ValueError(f"task {self.id}: give several prompt phrasings, got {len(self.templates)}")
        for template in self.templates:
            if template.count(IMAGE_TOKEN) != 1:
                raise ValueError(f"task {self.id}: template {template!r} must hold {IMAGE_TOKEN} exactly once")
            if (REGION_TOKEN in template) != self.uses_region:
                need = "must" if self.uses_region else "must not"
                raise ValueError(f"task {self.id}: template {template!r} {need} hold {REGION_TOKEN}")

    def prompt(self, rng: np.random.Generator, **fields: str) -> tuple[str, int]:
        """A random phrasing with ``{name}`` fields filled, and its template index (for ``meta``)."""
        index = int(rng.integers(len(self.templates)))
        template = self.templates[index]
        missing = set(_FIELD.findall(template)) - set(fields)
        if missing:
            raise KeyError(f"task {self.id}: template {index} needs fields {sorted(missing)}")
        return _FIELD.sub(lambda m: str(fields[m.group(1)]), template), index

    def __call__(self, record: Mapping[str, Any], rng: np.random.Generator, **kwargs: Any) -> list[dict[str, Any]]:
        return self.build(record, rng, **kwargs)


TASKS: dict[str, Task] = {}


def register_task(task: Task, replace: bool = False) -> Task:
    """Add ``task`` to :data:`TASKS`; an id already taken is an error unless ``replace``."""
    if task.id in TASKS and not replace:
        raise ValueError(f"task {task.id!r} is already registered; pass replace=True to redefine it")
    TASKS[task.id] = task
    return task


def get_task(task_id: str) -> Task:
    """The registered task ``task_id``; KeyError naming the known ids (and the closest) otherwise."""
    if task_id in TASKS:
        return TASKS[task_id]
    close = difflib.get_close_matches(str(task_id), list(TASKS), n=2)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"unknown task {task_id!r}{hint} (known: {', '.join(TASKS)})")


def task_rng(seed: int, image_id: str, task_id: str) -> np.random.Generator:
    """The random generator of one task on one image: depends only on these three values.

    So samples do not change with batch sizes, process counts, build order or the set of tasks.
    """
    digest = hashlib.sha256(f"{image_id}\x00{task_id}".encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def make_sample(record: Mapping[str, Any], task: Task, k: int, prompt: str, target: str,
                target_masks: Sequence[Mapping[str, Any]] = (), region: Mapping[str, Any] | None = None,
                **meta: Any) -> dict[str, Any]:
    """A sample dict (see the module doc); checks that ``[SEG]`` tokens and masks pair up."""
    if target.count(SEG_TOKEN) != len(target_masks):
        raise ValueError(f"{task.id} sample of {record['image_id']}: {target.count(SEG_TOKEN)} {SEG_TOKEN} "
                         f"in the target but {len(target_masks)} masks")
    if region is not None:
        region = {"kind": region["kind"], "concept": region.get("concept"), "mask": region.get("mask"),
                  "box": list(region["box"]) if region.get("box") is not None else None}
    return {
        "sample_id": f"{record['image_id']}/{task.id}/{k}",
        "image_id": record["image_id"],
        "image_index": int(record.get("image_index", -1)),
        "task": task.id,
        "prompt": prompt,
        "target": target,
        "target_masks": [dict(m) for m in target_masks],
        "region": region,
        "split": record.get("split", ""),
        "meta": json.dumps(meta, sort_keys=True),
    }
