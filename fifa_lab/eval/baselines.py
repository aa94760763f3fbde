"""Non-MLLM expert baselines for Det, Cls and Loc: a CNN detector/classifier and a U-Net artifact segmenter.

The FiFa-MLLM is compared against two plain convolutional experts trained on the same image records
(``run_dir/data/images``) under the same budget (a step count and/or a time limit):

* :class:`ExpertDetector`: images ``(B, 3, H, W)`` in [0, 1] -> detection logit ``(B,)`` (fake vs real) and
  class logits ``(B, 5)`` over :data:`CLASS_NAMES`. A stem and residual stages, each halving the resolution
  (conv-GroupNorm-GELU), then global average pooling and two linear heads.
* :class:`ExpertSegmenter`: images ``(B, 3, H, W)`` -> artifact mask logits ``(B, H, W)`` at full
  resolution, H and W divisible by 16. A U-Net: five levels of double convolutions, four max-pool
  downsamplings, bilinear upsampling with skip connections.

Training (:func:`train_detector`, :func:`train_segmenter`): AdamW at a constant learning rate, seeded
initialisation and sampling, optional horizontal flips (applied to the mask too). Losses: BCE on the
detection logit plus cross-entropy on the class logits; BCE plus soft Dice on the mask, whose target is the
record's ``artifact_mask`` (the MLLM's Loc target; all false for a real image, so real images teach the
segmenter to leave them empty), artifact pixels weighted up and Dice counted on fakes only.

Evaluation (:func:`predict_detector`, :func:`predict_masks`, :func:`evaluate_experts`) and storage
(:func:`save_expert`, :func:`load_expert`: a JSON config and safetensors weights, written atomically).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from PIL import Image as PILImage
from safetensors.torch import load_file, save_file
from torch import nn

from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.data.build import load_datasets
from fifa_lab.data.masks import decode_rle
from fifa_lab.forge.post import apply_post, check_chain
from fifa_lab.io import atomic_path

log = logging.getLogger(__name__)

CLASS_NAMES = FORGERY_CLASSES  # index i of the class logits is CLASS_NAMES[i]
SEGMENTER_MULTIPLE = 16  # the U-Net halves the resolution four times
ARTIFACT_PIXEL_WEIGHT = 3.0  # BCE weight of an artifact pixel against a clean one (segmenter_loss)
CONFIG_FILE = "expert.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
DETECTOR_COLUMNS = ("image", "label", "forgery_class")
SEGMENTER_COLUMNS = ("image", "artifact_mask")

ImageInput = torch.Tensor | Sequence[Any]  # a float batch, or PIL images / (H, W, 3) uint8 arrays


# --- configurations -----------------------------------------------------------------------------------


def _positive_widths(widths: Sequence[int], count: int | None, name: str) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        raise ValueError(f"{name} must be positive channel counts, got {widths}")
    if count is not None and len(widths) != count:
        raise ValueError(f"{name} needs exactly {count} widths, got {len(widths)}: {widths}")
    if count is None and len(widths) < 2:
        raise ValueError(f"{name} needs at least 2 widths (the stem and one stage), got {widths}")
    return widths


@dataclass(frozen=True)
class DetectorConfig:
    """``widths[0]`` is the stem's output, each further width a residual stage; all of them stride 2.

    The default's five strides take a 256 px image to an 8 x 8 grid before pooling.
    """

    widths: tuple[int, ...] = (32, 64, 128, 256, 256)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", _positive_widths(self.widths, None, "DetectorConfig.widths"))


@dataclass(frozen=True)
class SegmenterConfig:
    """Channels of the five U-Net levels, from full resolution down to 1/16.

    Half the classic widths: on a 2-core CPU the (16, ..., 256) U-Net took about 5 s a step at 256 px, so
    a two-minute budget gave it ~25 steps and it still predicted empty masks; this one takes ~130 steps
    in that time and localises (test Loc mIoU 0.42-0.44 after 120 s on the default data).
    """

    widths: tuple[int, ...] = (8, 16, 32, 64, 128)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", _positive_widths(self.widths, 5, "SegmenterConfig.widths"))


@dataclass(frozen=True)
class ExpertTrainConfig:
    """How long and how an expert trains.

    Training stops at ``max_steps`` optimiser steps or once ``time_budget_s`` seconds of training have
    passed, whichever comes first (at least one must be set; loading the datasets is not counted). Given
    the seed, the weights after step k are the same on every run on the same device, so a time budget only
    decides at which step a run stops. ``device`` is ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    """

    max_steps: int | None = None
    time_budget_s: float | None = None
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    hflip: bool = True
    seed: int = 0
    split: str = "train"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.max_steps is None and self.time_budget_s is None:
            raise ValueError("set max_steps, time_budget_s or both: training needs a budget")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0, got {self.time_budget_s}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0 or not self.max_grad_norm > 0:
            raise ValueError(f"need lr > 0, weight_decay >= 0 and max_grad_norm > 0, got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}, max_grad_norm={self.max_grad_norm}")
        _device(self.device)  # validates the name and that CUDA is there when asked for


def _device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA GPU here; use device='cpu' or 'auto'")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


# --- networks -------------------------------------------------------------------------------------------


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (as many as divide ``channels``)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


def _check_images(images: Any, multiple: int = 1) -> None:
    """Raise a clear error unless ``images`` is a float ``(B, 3, H, W)`` tensor in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}; "
                        "images_to_tensor converts PIL images and uint8 arrays")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}; "
                         "divide uint8 images by 255")
    height, width = images.shape[2:]
    if height % multiple or width % multiple:
        raise ValueError(f"image height and width must be divisible by {multiple}, got {height} x {width}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must lie in [0, 1], got values in [{images.min().item():.3g}, "
                         f"{images.max().item():.3g}]; divide 0-255 images by 255")


class _ResidualDown(nn.Module):
    """``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``: two 3x3 convs (the first strided) beside a 1x1 shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False), _norm(out_channels), nn.GELU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _norm(out_channels))
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False),
                                      _norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.body(x) + self.shortcut(x))


class ExpertDetector(nn.Module):
    """Images ``(B, 3, H, W)`` float in [0, 1] -> ``(det_logits (B,), cls_logits (B, 5))``.

    ``det_logits`` > 0 means fake; ``cls_logits[:, i]`` scores ``CLASS_NAMES[i]``. Any H, W work (pooling is
    global); the training data decides which sizes make sense.
    """

    kind = "detector"

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config or DetectorConfig()
        widths = self.config.widths
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False), _norm(widths[0]),
                                  nn.GELU())
        self.stages = nn.Sequential(*(_ResidualDown(a, b) for a, b in zip(widths, widths[1:])))
        self.det_head = nn.Linear(widths[-1], 1)
        self.cls_head = nn.Linear(widths[-1], len(CLASS_NAMES))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_images(images)
        features = self.stages(self.stem(images * 2.0 - 1.0))  # (B, C, H/2^k, W/2^k)
        pooled = features.mean(dim=(2, 3))  # (B, C)
        return self.det_head(pooled)[:, 0], self.cls_head(pooled)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """``(B, C_in, H, W) -> (B, C_out, H, W)``: two 3x3 conv-GroupNorm-GELU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), _norm(out_channels), nn.GELU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _norm(out_channels), nn.GELU())


class ExpertSegmenter(nn.Module):
    """Images ``(B, 3, H, W)`` float in [0, 1], H and W divisible by 16 -> mask logits ``(B, H, W)``.

    A logit > 0 marks an artifact pixel.
    """

    kind = "segmenter"

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        super().__init__()
        self.config = config or SegmenterConfig()
        widths = self.config.widths
        self.encoders = nn.ModuleList(
            [_double_conv(3, widths[0])] + [_double_conv(a, b) for a, b in zip(widths, widths[1:])])
        # decoders[0] joins level 4 to level 3, ..., decoders[3] joins level 1 to level 0 (full resolution)
        self.decoders = nn.ModuleList(
            [_double_conv(widths[level + 1] + widths[level], widths[level]) for level in reversed(range(4))])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images, SEGMENTER_MULTIPLE)
        x = images * 2.0 - 1.0
        skips = []  # level k: (B, widths[k], H / 2^k, W / 2^k)
        for level, encoder in enumerate(self.encoders):
            x = encoder(F.max_pool2d(x, 2) if level else x)
            skips.append(x)
        x = skips.pop()
        for decoder in self.decoders:
            skip = skips.pop()
            upsampled = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = decoder(torch.cat([upsampled, skip], dim=1))
        return self.head(x)[:, 0]


EXPERTS: dict[str, tuple[type[nn.Module], type]] = {
    ExpertDetector.kind: (ExpertDetector, DetectorConfig),
    ExpertSegmenter.kind: (ExpertSegmenter, SegmenterConfig),
}


# --- records -> tensors ---------------------------------------------------------------------------------


def images_to_tensor(pictures: Sequence[Any]) -> torch.Tensor:
    """PIL images or ``(H, W, 3)`` uint8 arrays, all the same size -> ``(N, 3, H, W)`` float32 in [0, 1]."""
    arrays = [np.asarray(p.convert("RGB")) if isinstance(p, PILImage.Image) else np.asarray(p) for p in pictures]
    if not arrays:
        raise ValueError("no images given")
    for array in arrays:
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"each image must be a PIL image or an (H, W, 3) uint8 array, "
                             f"got {array.dtype} {array.shape}")
        if array.shape != arrays[0].shape:
            raise ValueError(f"images differ in size: {arrays[0].shape[:2]} and {array.shape[:2]}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)


def _masks_to_tensor(rles: Sequence[Any]) -> torch.Tensor:
    """Artifact mask RLEs -> ``(N, H, W)`` float32 of 0 and 1."""
    return torch.from_numpy(np.stack([decode_rle(rle) for rle in rles])).float()


def _detector_targets(labels: Sequence[str], classes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and forgery classes -> ``(is_fake (N,) float32, class_index (N,) int64)``."""
    unknown = sorted({x for x in labels if x not in ("real", "fake")} | {c for c in classes if c not in CLASS_NAMES})
    if unknown:
        raise ValueError(f"unknown label or forgery class {unknown}; labels are real/fake, classes "
                         f"{', '.join(CLASS_NAMES)}")
    is_fake = torch.tensor([x == "fake" for x in labels], dtype=torch.float32)
    return is_fake, torch.tensor([CLASS_NAMES.index(c) for c in classes], dtype=torch.int64)


def _detector_batch(records: dict[str, list], flips: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Records -> ``(images (B, 3, H, W), is_fake (B,), class_index (B,))``, ``flips`` (B,) bool mirrored."""
    images = images_to_tensor(records["image"])
    images[flips] = images[flips].flip(-1)
    return (images, *_detector_targets(records["label"], records["forgery_class"]))


def _segmenter_batch(records: dict[str, list], flips: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Records -> ``(images (B, 3, H, W), masks (B, H, W))``; ``flips`` (B,) bool mirrors image and mask alike."""
    images = images_to_tensor(records["image"])
    masks = _masks_to_tensor(records["artifact_mask"])
    if masks.shape[1:] != images.shape[2:]:
        raise ValueError(f"artifact masks are {tuple(masks.shape[1:])} but images {tuple(images.shape[2:])}")
    images[flips] = images[flips].flip(-1)
    masks[flips] = masks[flips].flip(-1)
    return images, masks


# --- losses ---------------------------------------------------------------------------------------------


def detector_loss(model: ExpertDetector, images: torch.Tensor, is_fake: torch.Tensor,
                  class_index: torch.Tensor) -> torch.Tensor:
    """BCE of the detection logit against ``is_fake`` (B,) plus cross-entropy against ``class_index`` (B,)."""
    det_logits, cls_logits = model(images)
    return F.binary_cross_entropy_with_logits(det_logits, is_fake) + F.cross_entropy(cls_logits, class_index)


def segmenter_loss(model: ExpertSegmenter, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pixel BCE (artifact pixels weighted :data:`ARTIFACT_PIXEL_WEIGHT`) plus soft Dice on the fakes.

    Artifact pixels are a few percent of the training pixels (none on reals), so unweighted BCE settles
    on empty masks first. Dice is averaged over images with an artifact only: a real image's empty
    target is BCE's job, and averaging Dice over reals too would reward the same empty masks.
    """
    logits = model(images)  # (B, H, W)
    weight = torch.tensor(ARTIFACT_PIXEL_WEIGHT, dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, masks, pos_weight=weight)
    probs = logits.sigmoid()
    overlap = (probs * masks).sum(dim=(1, 2))
    total = probs.sum(dim=(1, 2)) + masks.sum(dim=(1, 2))
    dice = 1.0 - (2.0 * overlap + 1.0) / (total + 1.0)  # (B,), smoothed by one pixel
    fake = masks.flatten(1).any(1).to(dice.dtype)
    return bce + (dice * fake).sum() / fake.sum().clamp(min=1.0)


# --- training -------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """A trained expert (in eval mode), its loss at every step and the seconds the steps took."""

    model: nn.Module
    losses: list[float]
    seconds: float

    @property
    def steps(self) -> int:
        return len(self.losses)


def _split_dataset(data: str | os.PathLike | Dataset, split: str) -> Dataset:
    if isinstance(data, Dataset):
        return data
    images = load_datasets(data).images
    if split not in images:
        raise ValueError(f"no split {split!r} in {data}; it has {', '.join(images)}")
    return images[split]


def _seeded_model(model_class: type[nn.Module], config: Any, seed: int) -> nn.Module:
    """The model initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_class(config)


def _train(model: nn.Module, dataset: Dataset, columns: Sequence[str], config: ExpertTrainConfig,
           make_batch: Callable[[dict[str, list], torch.Tensor], tuple[torch.Tensor, ...]],
           loss_fn: Callable[..., torch.Tensor]) -> TrainResult:
    """Shuffled epochs of full batches (a new seeded permutation each epoch) until the budget is spent."""
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset lacks column(s) {missing}; it has {dataset.column_names}")
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty")
    dataset = dataset.select_columns(list(columns))
    device = _device(config.device)
    batch_size = min(config.batch_size, len(dataset))
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    order, position, losses = torch.empty(0, dtype=torch.int64), 0, []
    start = time.monotonic()
    while config.max_steps is None or len(losses) < config.max_steps:
        if position + batch_size > len(order):
            order, position = torch.randperm(len(dataset), generator=generator), 0
        indices = order[position:position + batch_size].tolist()
        position += batch_size
        # flips are drawn either way, so hflip=False sees the same batches in the same order
        flips = torch.rand(batch_size, generator=generator) < 0.5
        if not config.hflip:
            flips.zero_()
        tensors = [t.to(device) for t in make_batch(dataset[indices], flips)]
        loss = loss_fn(model, *tensors)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        if config.time_budget_s is not None and time.monotonic() - start >= config.time_budget_s:
            break
    seconds = time.monotonic() - start
    log.info("%s: %d steps in %.1f s, loss %.4f -> %.4f", type(model).__name__, len(losses), seconds, losses[0],
             losses[-1])
    return TrainResult(model.eval(), losses, seconds)


def train_detector(data: str | os.PathLike | Dataset, config: ExpertTrainConfig,
                   model_config: DetectorConfig | None = None) -> TrainResult:
    """Train a fresh :class:`ExpertDetector` on a run folder's ``config.split`` (or on an image Dataset).

    The Dataset needs the columns ``image``, ``label`` and ``forgery_class`` of the image records.
    """
    model = _seeded_model(ExpertDetector, model_config or DetectorConfig(), config.seed)
    return _train(model, _split_dataset(data, config.split), DETECTOR_COLUMNS, config, _detector_batch,
                  detector_loss)


def train_segmenter(data: str | os.PathLike | Dataset, config: ExpertTrainConfig,
                    model_config: SegmenterConfig | None = None) -> TrainResult:
    """Train a fresh :class:`ExpertSegmenter` on the ``artifact_mask`` of a run folder's ``config.split``.

    Real images take part with their empty masks. The Dataset needs the columns ``image`` and ``artifact_mask``.
    """
    model = _seeded_model(ExpertSegmenter, model_config or SegmenterConfig(), config.seed)
    return _train(model, _split_dataset(data, config.split), SEGMENTER_COLUMNS, config, _segmenter_batch,
                  segmenter_loss)


# --- prediction and evaluation --------------------------------------------------------------------------


def _image_batches(images: ImageInput, batch_size: int) -> Iterator[torch.Tensor]:
    """``(b, 3, H, W)`` float batches of a float tensor or a sequence of PIL images / uint8 arrays."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        yield chunk if isinstance(chunk, torch.Tensor) else images_to_tensor(list(chunk))


def _run_eval(model: nn.Module, images: ImageInput, batch_size: int,
              forward: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]) -> list[np.ndarray]:
    """Apply ``forward`` batch by batch without gradients in eval mode; concatenate each output on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[list[np.ndarray]] = []
    try:
        with torch.no_grad():
            for batch in _image_batches(images, batch_size):
                outputs.append([o.cpu().numpy() for o in forward(batch.to(device))])
    finally:
        model.train(was_training)
    if not outputs:
        raise ValueError("no images given")
    return [np.concatenate(parts) for parts in zip(*outputs)]


def predict_detector(model: ExpertDetector, images: ImageInput, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(fake_prob (N,) float32, class_pred (N,) int64)``; ``class_pred`` indexes :data:`CLASS_NAMES`.

    ``images``: an ``(N, 3, H, W)`` float tensor in [0, 1], or a sequence of PIL images / uint8 arrays.
    """
    def forward(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        det_logits, cls_logits = model(batch)
        return det_logits.sigmoid(), cls_logits.argmax(dim=1)

    fake_prob, class_pred = _run_eval(model, images, batch_size, forward)
    return fake_prob.astype(np.float32), class_pred.astype(np.int64)


def predict_masks(model: ExpertSegmenter, images: ImageInput, batch_size: int = 32) -> np.ndarray:
    """``(N, H, W)`` bool artifact masks (logit > 0, i.e. probability > 0.5).

    ``images`` as in :func:`predict_detector`, H and W divisible by 16.
    """
    (masks,) = _run_eval(model, images, batch_size, lambda batch: (model(batch) > 0,))
    return masks


def _mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    union = np.logical_or(predicted, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(predicted, truth).sum() / union)


def _as_expert(model: nn.Module | str | os.PathLike, expected: type[nn.Module], device: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        model = load_expert(model, device=device)
    if not isinstance(model, expected):
        raise TypeError(f"expected an {expected.__name__} (or its folder), got {type(model).__name__}")
    return model


def evaluate_experts(run_dir: str | os.PathLike, split: str = "test", *,
                     detector: ExpertDetector | str | os.PathLike, segmenter: ExpertSegmenter | str | os.PathLike,
                     batch_size: int = 32, device: str = "auto",
                     perturb: Sequence[Mapping[str, Any]] | None = None, max_images: int | None = None,
                     seed: int = 0) -> dict[str, float]:
    """Det, Cls and Loc scores of both experts on a split of the run folder's image records.

    ``perturb``: a post-processing chain (:mod:`fifa_lab.forge.post`) applied to every image first, for
    robustness curves; the ground truth stays as it is. ``max_images``: score a subset of that many
    images drawn by ``seed`` (the same subset for every ``perturb``); None scores the whole split.

    ``detector`` and ``segmenter`` are models or folders written by :func:`save_expert` (loaded onto
    ``device``). Returns:

    * ``det_acc``: share of images whose fake probability is on the right side of 0.5 (all images);
    * ``cls_acc``: share of images whose arg-max class is their ``forgery_class`` (all images, 5 classes);
    * ``loc_miou``: mean over the FAKE images of the IoU of the predicted mask with ``artifact_mask``
      (an image where both are empty counts 1.0; NaN when the split has no fake image);
    * ``n_images``, ``n_fake``: the counts behind them.
    """
    chain = check_chain(perturb or [])
    detector = _as_expert(detector, ExpertDetector, device)
    segmenter = _as_expert(segmenter, ExpertSegmenter, device)
    dataset = _split_dataset(run_dir, split).select_columns(["image", "label", "forgery_class", "artifact_mask"])
    if len(dataset) == 0:
        raise ValueError(f"split {split!r} of {run_dir} has no images")
    if max_images is not None and max_images < len(dataset):
        if max_images < 1:
            raise ValueError(f"max_images must be a positive number of images or None, got {max_images!r}")
        dataset = dataset.select(sorted(np.random.default_rng(seed).choice(len(dataset), max_images, replace=False)))
    det_correct = cls_correct = 0
    ious: list[float] = []
    for start in range(0, len(dataset), batch_size):
        records = dataset[start:start + batch_size]
        pictures = records["image"] if not chain else \
            [apply_post(np.asarray(picture.convert("RGB")), chain) for picture in records["image"]]
        images = images_to_tensor(pictures)
        is_fake, class_index = _detector_targets(records["label"], records["forgery_class"])
        fake_prob, class_pred = predict_detector(detector, images, batch_size)
        det_correct += int(((fake_prob > 0.5) == is_fake.numpy().astype(bool)).sum())
        cls_correct += int((class_pred == class_index.numpy()).sum())
        masks = predict_masks(segmenter, images, batch_size)
        ious += [_mask_iou(mask, decode_rle(rle))
                 for mask, rle, fake in zip(masks, records["artifact_mask"], is_fake.tolist()) if fake]
    return {"det_acc": det_correct / len(dataset), "cls_acc": cls_correct / len(dataset),
            "loc_miou": float(np.mean(ious)) if ious else float("nan"), "n_images": len(dataset),
            "n_fake": len(ious)}


# --- storage --------------------------------------------------------------------------------------------


def save_expert(model: ExpertDetector | ExpertSegmenter, directory: str | os.PathLike) -> Path:
    """Write ``directory/expert.json`` (kind, config) and ``directory/model.safetensors`` atomically.

    An existing folder is replaced only once the new one is complete. Returns the folder.
    """
    if not isinstance(model, (ExpertDetector, ExpertSegmenter)):
        raise TypeError(f"save_expert takes an ExpertDetector or ExpertSegmenter, got {type(model).__name__}")
    meta = {"format_version": FORMAT_VERSION, "kind": model.kind, "config": asdict(model.config)}
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        save_file({name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()},
                  str(tmp / WEIGHTS_FILE))
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return Path(directory)


def load_expert(directory: str | os.PathLike, device: str = "cpu") -> ExpertDetector | ExpertSegmenter:
    """The expert saved by :func:`save_expert` in ``directory``, on ``device``, in eval mode."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {directory} is not a folder written by save_expert")
    meta = json.loads(config_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{config_path}: format_version {meta.get('format_version')!r}, "
                         f"this code reads {FORMAT_VERSION}")
    if meta.get("kind") not in EXPERTS:
        raise ValueError(f"{config_path}: unknown expert kind {meta.get('kind')!r} (known: {', '.join(EXPERTS)})")
    model_class, config_class = EXPERTS[meta["kind"]]
    model = model_class(config_class(**meta["config"]))
    target = _device(device)
    model.load_state_dict(load_file(str(weights_path), device=str(target)))
    return model.to(target).eval()
