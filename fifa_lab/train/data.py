"""Training data: FiFa samples joined to their images, task-weighted sampling, batching for FiFa-MLLM.

:class:`SampleDataset` turns one split of ``samples`` (plus the same split of ``images``) into model-ready
rows; :class:`StepBatchSampler` draws the micro-batches of each optimizer step from per-task ratios;
:func:`collate` builds the keyword arguments of :meth:`FiFaMLLM.forward`.

Sampling is a pure function of ``(seed, micro-batch number, process)``, not of an iterator's history,
so a resumed run draws exactly the batches the uninterrupted run would have drawn.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from datasets import Dataset as HFDataset
from torch.utils.data import Dataset, Sampler

from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.data.masks import box_to_mask, decode_rle
from fifa_lab.data.records import decode_label_map
from fifa_lab.fict import ConceptTree, load_tree
from fifa_lab.fict.names import resolve_phrase
from fifa_lab.model.fifa_mllm import parse_phrases
from fifa_lab.model.parsing_head import IGNORE_LABEL
from fifa_lab.tasks.registry import SEG_TOKEN


def load_image(image: Any, size: int) -> np.ndarray:
    """A dataset image (PIL or array) as ``(size, size, 3)`` uint8 RGB, resized with INTER_AREA if needed."""
    array = np.array(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8)
    if array.shape[:2] != (size, size):
        array = cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA)
    return array


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """``(h, w)`` bool mask at ``(size, size)``: area-averaged then thresholded at half coverage."""
    if mask.shape == (size, size):
        return mask.astype(bool)
    # INTER_AREA + 0.5 keeps thin structures better than nearest-neighbour when shrinking
    return cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5


def region_mask(region: Mapping[str, Any] | None, source_size: Sequence[int], size: int) -> np.ndarray | None:
    """What ``<region>`` stands for as a ``(size, size)`` bool mask; ``None`` for a sample without region.

    ``source_size`` is the ``(h, w)`` of the stored image, which box coordinates refer to.
    """
    if region is None:
        return None
    if region.get("kind") == "box":
        height, width = source_size
        x0, y0, x1, y1 = (float(v) for v in region["box"])
        # box coordinates are pixels of the stored image; scale them, then rasterise at the model size
        sx, sy = size / width, size / height
        return box_to_mask((x0 * sx, y0 * sy, x1 * sx, y1 * sy), (size, size))
    return resize_mask(decode_rle(region["mask"]), size)


def parsing_target(label_map: Any, size: int) -> torch.Tensor:
    """A stored ``label_map`` column value -> ``(size, size)`` long: leaf index + 1, 0 = no concept;
    ``IGNORE_LABEL`` everywhere when the image has no label map (``None``)."""
    if label_map is None:
        return torch.full((size, size), IGNORE_LABEL, dtype=torch.long)
    labels = decode_label_map(label_map).astype(np.int32) + 1  # int32: what cv2.resize takes
    if labels.shape != (size, size):
        labels = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(labels).long()


def seg_concepts(text: str, tree: ConceptTree) -> list[tuple[int, ...] | None]:
    """Per ``[SEG]`` of ``text`` (prompt then answer), the parsing classes (leaf index + 1) of the concept
    its phrase names: the phrase is the last ``<p>...</p>`` since the previous ``[SEG]``, in the answer
    (AGE) or in the prompt (RSeg), as :meth:`~fifa_lab.model.FiFaMLLM._seg_phrases` reads it. ``None``
    where there is no phrase or it names no concept (Loc's "manipulated area"): the concept gate then
    opens."""
    picks = []
    for before in text.split(SEG_TOKEN)[:-1]:
        phrases = parse_phrases(before)
        concept = resolve_phrase(phrases[-1], tree) if phrases else None
        picks.append(None if concept is None else
                     tuple(tree.leaf_index[leaf.id] + 1 for leaf in tree.leaves(concept.id)))
    return picks


def task_weights(tasks: Sequence[str], ratios: Mapping[str, float]) -> np.ndarray:
    """Per-row draw probability so that task ``t`` is drawn with share ``ratios[t] / sum(ratios)``.

    Each row of task ``t`` gets ``ratios[t] / count[t]``: the share follows the ratio, not how many
    samples the task happens to have. Tasks missing from ``ratios`` weigh 1.
    """
    counts = Counter(tasks)
    weights = np.array([ratios.get(t, 1.0) / counts[t] for t in tasks], dtype=np.float64)
    if not len(weights) or weights.sum() <= 0:
        raise ValueError(f"no task left to sample: tasks {sorted(counts)}, ratios {dict(ratios)}")
    return weights / weights.sum()


class SampleDataset(Dataset):
    """One split of FiFa samples with their images, at the model's ``image_size``.

    Tasks whose ratio is 0 are dropped here (that is how auxiliary tasks such as Det/Cls/RSeg are
    switched off); a negative ratio is an error. Each item is a dict with ``image`` ``(3, S, S)`` float
    in [0, 1], ``prompt``, ``target``, ``task``, ``masks`` ``(K, S, S)`` float (one per ``[SEG]``),
    ``region`` ``(S, S)`` float or ``None``, and the image's own labels for the forgery head: ``is_fake``
    (0/1), ``forgery_class`` (index in :data:`~fifa_lab.artifacts.FORGERY_CLASSES`) and ``artifact_mask``
    ``(S, S)`` float; and for the parsing head ``label_map`` ``(S, S)`` long
    (FICT leaf + 1, 0 = no concept, ``IGNORE_LABEL`` everywhere for an image stored without one), and
    ``seg_concepts`` (:func:`seg_concepts` in ``tree``, the run's concept tree; default the FICT).
    """

    def __init__(self, samples: HFDataset, images: HFDataset, image_size: int,
                 task_ratios: Mapping[str, float] | None = None, tree: ConceptTree | None = None) -> None:
        self.ratios = dict(task_ratios or {})
        negative = {t: r for t, r in self.ratios.items() if r < 0}
        if negative:
            raise ValueError(f"task ratios must be >= 0, got {negative}")
        keep = [i for i, task in enumerate(samples["task"]) if self.ratios.get(task, 1.0) > 0]
        self.samples = samples.select(keep)
        # only what training reads: decoding the label map and the rest per row would be wasted work
        self.images = images.select_columns(["image", "label", "forgery_class", "artifact_mask", "label_map"])
        self.image_size = image_size
        self.tree = tree or load_tree()
        self.tasks: list[str] = list(self.samples["task"])

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, index: int) -> np.ndarray:
        """The image of sample ``index`` as ``(S, S, 3)`` uint8 (what ``generate``/``ground`` take)."""
        return load_image(self.images[int(self.samples[index]["image_index"])]["image"], self.image_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.samples[index]
        size = self.image_size
        record = self.images[int(row["image_index"])]
        pil = record["image"]
        image = load_image(pil, size)
        masks = [resize_mask(decode_rle(rle), size) for rle in row["target_masks"]]
        region = region_mask(row["region"], (pil.height, pil.width) if hasattr(pil, "height") else image.shape[:2],
                             size)
        return {
            "image": torch.from_numpy(image).permute(2, 0, 1).float() / 255.0,
            "prompt": row["prompt"],
            "target": row["target"],
            "task": row["task"],
            "masks": torch.from_numpy(np.stack(masks)).float() if masks else torch.zeros(0, size, size),
            "region": None if region is None else torch.from_numpy(region).float(),
            "is_fake": float(record["label"] == "fake"),
            "forgery_class": FORGERY_CLASSES.index(record["forgery_class"]),
            "artifact_mask": torch.from_numpy(resize_mask(decode_rle(record["artifact_mask"]), size)).float(),
            "label_map": parsing_target(record["label_map"], size),
            "seg_concepts": seg_concepts(f"{row['prompt']} {row['target']}", self.tree),
        }

    def weights(self) -> np.ndarray:
        """Draw probability of each row under the task ratios (see :func:`task_weights`)."""
        return task_weights(self.tasks, self.ratios)


class StepBatchSampler(Sampler[list[int]]):
    """Micro-batches ``start, start + 1, ..., stop - 1``, drawn with replacement from ``weights``.

    Micro-batch ``k`` of process ``rank`` comes from its own generator seeded by ``(seed, k, rank)``,
    so the batches do not depend on where a run started or was resumed, and processes see different data.
    """

    def __init__(self, weights: np.ndarray, batch_size: int, seed: int, start: int, stop: int, rank: int = 0) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.batch_size, self.seed, self.start, self.stop, self.rank = batch_size, seed, start, stop, rank

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for k in range(self.start, self.stop):
            generator = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, k, self.rank]).generate_state(1)[0]))
            yield torch.multinomial(self.weights, self.batch_size, replacement=True, generator=generator).tolist()


def collate(model: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """A ``collate_fn`` giving :meth:`FiFaMLLM.forward` keyword arguments plus ``tasks``.

    Text goes through ``model.encode``; images are stacked; rows without a region get an all-zero
    region (the model ignores it); masks and the concept gate's targets stay one ``(K_b, ...)`` tensor
    per row since ``K_b`` varies.
    """
    def collate_fn(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = dict(model.encode([r["prompt"] for r in rows], [r["target"] for r in rows]))
        batch["images"] = torch.stack([r["image"] for r in rows])
        if any(r["region"] is not None for r in rows):
            blank = torch.zeros_like(rows[0]["image"][0])
            batch["regions"] = torch.stack([blank if r["region"] is None else r["region"] for r in rows])
        batch["seg_masks"] = [r["masks"] for r in rows]
        batch["is_fake"] = torch.tensor([r["is_fake"] for r in rows])
        batch["forgery_classes"] = torch.tensor([r["forgery_class"] for r in rows])
        batch["artifact_masks"] = torch.stack([r["artifact_mask"] for r in rows])
        batch["label_maps"] = torch.stack([r["label_map"] for r in rows])
        batch["seg_concepts"] = [pick_targets(r["seg_concepts"], model.config.parsing_classes) for r in rows]
        batch["tasks"] = [r["task"] for r in rows]
        return batch
    return collate_fn


def pick_targets(picks: Sequence[tuple[int, ...] | None], classes: int) -> torch.Tensor:
    """:func:`seg_concepts` output -> ``(K, classes + 1)`` 0/1 targets of the concept gate: the named
    classes, and the last column ("open") set where no concept is named (``None``)."""
    targets = torch.zeros(len(picks), classes + 1)
    for k, pick in enumerate(picks):
        if pick is None:
            targets[k, classes] = 1.0
        else:
            if max(pick) >= classes:
                raise ValueError(f"concept class {max(pick)} is beyond the model's {classes} parsing classes")
            targets[k, list(pick)] = 1.0
    return targets
