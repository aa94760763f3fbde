"""The non-MLLM expert baselines: shapes, training, determinism, storage, input checks and evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from fifa_lab.data.build import build_dataset, load_datasets
from fifa_lab.eval.baselines import (
    CLASS_NAMES,
    DetectorConfig,
    ExpertDetector,
    ExpertSegmenter,
    ExpertTrainConfig,
    SegmenterConfig,
    _mask_iou,
    ARTIFACT_PIXEL_WEIGHT,
    _segmenter_batch,
    evaluate_experts,
    images_to_tensor,
    load_expert,
    predict_detector,
    predict_masks,
    save_expert,
    segmenter_loss,
    train_detector,
    train_segmenter,
)

SIZE = 64
TINY_DETECTOR = DetectorConfig(widths=(8, 16, 16, 32))
TINY_SEGMENTER = SegmenterConfig(widths=(8, 8, 16, 16, 32))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny nets run many times faster on one thread than on several competing for a busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six faces at 64 px: train and validation hold a few real and fake images each, test none."""
    root = tmp_path_factory.mktemp("baselines")
    build_dataset(root, n_faces=6, size=SIZE, ratios=(0.5, 0.5, 0.0))
    return root


@pytest.fixture(scope="module")
def train_images(run_dir: Path) -> Dataset:
    images = load_datasets(run_dir).images["train"]
    assert {"real", "fake"} <= set(images["label"]), "the tiny build should have both labels in train"
    return images


def config(**overrides) -> ExpertTrainConfig:
    return ExpertTrainConfig(**{"max_steps": 3, "batch_size": 4, "lr": 3e-3, "device": "cpu", **overrides})


def test_forward_shapes() -> None:
    detector, segmenter = ExpertDetector(TINY_DETECTOR), ExpertSegmenter(TINY_SEGMENTER)
    for shape in ((2, 3, SIZE, SIZE), (1, 3, 32, 48)):
        images = torch.rand(shape)
        det_logits, cls_logits = detector(images)
        assert det_logits.shape == (shape[0],) and cls_logits.shape == (shape[0], len(CLASS_NAMES))
        assert segmenter(images).shape == (shape[0], *shape[2:])


def test_default_configs_take_256_px() -> None:
    images = torch.rand(1, 3, 256, 256)
    assert ExpertDetector()(images)[1].shape == (1, 5)
    assert ExpertSegmenter()(images).shape == (1, 256, 256)


def test_training_overfits_four_images(train_images: Dataset) -> None:
    four = train_images.select(range(4))
    settings = config(max_steps=30, lr=1e-2, hflip=False)
    for result in (train_detector(four, settings, TINY_DETECTOR), train_segmenter(four, settings, TINY_SEGMENTER)):
        assert result.steps == 30 and len(result.losses) == 30 and result.seconds > 0
        assert np.mean(result.losses[-5:]) < 0.8 * np.mean(result.losses[:5]), result.losses
        assert not result.model.training


class _FixedLogits(torch.nn.Module):
    """Stands in for a segmenter: returns the same logits whatever the images (to check the loss alone)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_segmenter_loss_weights_artifact_pixels_and_counts_dice_on_fakes_only() -> None:
    images = torch.zeros(2, 3, 4, 4)
    fake_mask = torch.zeros(4, 4)
    fake_mask[:2, :2] = 1.0  # 4 of 16 pixels
    empty = torch.zeros(4, 4)
    # all logits 0 (p = 0.5): BCE is log 2 per clean pixel and 3 log 2 per artifact pixel
    logits = torch.zeros(2, 4, 4)
    both = segmenter_loss(_FixedLogits(logits), images, torch.stack([fake_mask, empty]))
    bce = np.log(2) * (28 + 4 * ARTIFACT_PIXEL_WEIGHT) / 32
    dice_fake = 1 - (2 * 0.5 * 4 + 1) / (0.5 * 16 + 4 + 1)
    assert both.item() == pytest.approx(bce + dice_fake, rel=1e-5)  # the real image adds no Dice term
    reals = segmenter_loss(_FixedLogits(logits), images, torch.stack([empty, empty]))
    assert reals.item() == pytest.approx(np.log(2), rel=1e-5)  # BCE alone on a batch of reals


def test_time_budget_stops_training(train_images: Dataset) -> None:
    result = train_detector(train_images, config(max_steps=None, time_budget_s=0.01), TINY_DETECTOR)
    assert result.steps >= 1 and result.seconds >= 0.01


def test_same_seed_same_weights(run_dir: Path) -> None:
    def weights(train, model_config, seed):
        return train(run_dir, config(seed=seed), model_config).model.state_dict()

    for train, model_config in ((train_detector, TINY_DETECTOR), (train_segmenter, TINY_SEGMENTER)):
        first, again, other = (weights(train, model_config, seed) for seed in (0, 0, 1))
        assert all(torch.equal(first[name], again[name]) for name in first)
        assert not all(torch.equal(first[name], other[name]) for name in first)


def test_flip_mirrors_image_and_mask(train_images: Dataset) -> None:
    records = train_images.select_columns(["image", "artifact_mask"])[:2]
    images, masks = _segmenter_batch(records, torch.tensor([False, False]))
    flipped_images, flipped_masks = _segmenter_batch(records, torch.tensor([True, False]))
    assert torch.equal(flipped_images[0], images[0].flip(-1)) and torch.equal(flipped_images[1], images[1])
    assert torch.equal(flipped_masks[0], masks[0].flip(-1)) and torch.equal(flipped_masks[1], masks[1])


def test_save_load_round_trip(tmp_path: Path) -> None:
    images = torch.rand(2, 3, SIZE, SIZE)
    for model in (ExpertDetector(TINY_DETECTOR), ExpertSegmenter(TINY_SEGMENTER)):
        folder = save_expert(model, tmp_path / model.kind)
        save_expert(model, folder)  # replacing an existing folder works
        assert sorted(p.name for p in folder.iterdir()) == ["expert.json", "model.safetensors"]
        loaded = load_expert(folder)
        assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
        with torch.no_grad():
            expected, got = model.eval()(images), loaded(images)
        for a, b in zip(expected if isinstance(expected, tuple) else (expected,),
                        got if isinstance(got, tuple) else (got,)):
            assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*"))  # no temporaries left


def test_load_expert_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="save_expert"):
        load_expert(tmp_path / "missing")
    folder = save_expert(ExpertDetector(TINY_DETECTOR), tmp_path / "detector")
    meta = json.loads((folder / "expert.json").read_text())
    (folder / "expert.json").write_text(json.dumps({**meta, "kind": "oracle"}))
    with pytest.raises(ValueError, match="unknown expert kind"):
        load_expert(folder)
    with pytest.raises(TypeError, match="ExpertDetector or ExpertSegmenter"):
        save_expert(torch.nn.Linear(2, 2), tmp_path / "linear")


@pytest.mark.parametrize("images, message", [
    (torch.rand(3, SIZE, SIZE), r"shape \(B, 3, H, W\)"),
    (torch.rand(1, 1, SIZE, SIZE), r"shape \(B, 3, H, W\)"),
    (torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), "float tensor"),
    (torch.rand(1, 3, SIZE, SIZE) * 255, r"\[0, 1\]"),
])
def test_bad_images_raise(images: torch.Tensor, message: str) -> None:
    for model in (ExpertDetector(TINY_DETECTOR), ExpertSegmenter(TINY_SEGMENTER)):
        with pytest.raises(ValueError, match=message):
            model(images)


def test_other_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        ExpertSegmenter(TINY_SEGMENTER)(torch.rand(1, 3, 40, SIZE))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ExpertDetector(TINY_DETECTOR)(np.zeros((1, 3, SIZE, SIZE), dtype=np.float32))
    with pytest.raises(ValueError, match="budget"):
        ExpertTrainConfig()
    with pytest.raises(ValueError, match="exactly 5 widths"):
        SegmenterConfig(widths=(8, 16, 32))
    with pytest.raises(ValueError, match="uint8"):
        images_to_tensor([np.zeros((SIZE, SIZE, 3), dtype=np.float32)])


def test_predictions_from_tensor_and_pil_agree(train_images: Dataset) -> None:
    pictures = list(train_images.select(range(3))["image"])
    tensor = images_to_tensor(pictures)
    detector, segmenter = ExpertDetector(TINY_DETECTOR), ExpertSegmenter(TINY_SEGMENTER)
    fake_prob, class_pred = predict_detector(detector, tensor, batch_size=2)
    assert fake_prob.shape == (3,) and fake_prob.dtype == np.float32 and ((0 <= fake_prob) & (fake_prob <= 1)).all()
    assert class_pred.shape == (3,) and class_pred.dtype == np.int64 and set(class_pred) <= set(range(5))
    masks = predict_masks(segmenter, tensor, batch_size=2)
    assert masks.shape == (3, SIZE, SIZE) and masks.dtype == bool
    np.testing.assert_allclose(predict_detector(detector, pictures)[0], fake_prob, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(predict_masks(segmenter, pictures), masks)


def test_mask_iou() -> None:
    truth = np.zeros((4, 4), dtype=bool)
    truth[:2] = True
    assert _mask_iou(truth, truth) == 1.0
    assert _mask_iou(np.zeros_like(truth), np.zeros_like(truth)) == 1.0
    assert _mask_iou(np.ones_like(truth), truth) == 0.5
    assert _mask_iou(~truth, truth) == 0.0


def test_evaluate_experts(run_dir: Path, tmp_path: Path) -> None:
    settings = config(max_steps=2)
    detector = train_detector(run_dir, settings, TINY_DETECTOR).model
    segmenter = save_expert(train_segmenter(run_dir, settings, TINY_SEGMENTER).model, tmp_path / "segmenter")
    scores = evaluate_experts(run_dir, "validation", detector=detector, segmenter=segmenter, batch_size=3)
    validation = load_datasets(run_dir).images["validation"]
    assert set(scores) == {"det_acc", "cls_acc", "loc_miou", "n_images", "n_fake"}
    assert scores["n_images"] == len(validation) and scores["n_fake"] == list(validation["label"]).count("fake") > 0
    assert all(0.0 <= scores[key] <= 1.0 for key in ("det_acc", "cls_acc", "loc_miou"))
    subset = evaluate_experts(run_dir, "validation", detector=detector, segmenter=segmenter, max_images=2, seed=1)
    assert subset["n_images"] == 2
    assert subset == evaluate_experts(run_dir, "validation", detector=detector, segmenter=segmenter, max_images=2,
                                      seed=1)
    with pytest.raises(ValueError, match="max_images"):
        evaluate_experts(run_dir, "validation", detector=detector, segmenter=segmenter, max_images=0)
    with pytest.raises(ValueError, match="no images"):
        evaluate_experts(run_dir, "test", detector=detector, segmenter=segmenter)
    with pytest.raises(TypeError, match="ExpertSegmenter"):
        evaluate_experts(run_dir, "validation", detector=detector, segmenter=detector)
