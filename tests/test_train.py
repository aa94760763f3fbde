"""Trainer: data pipeline, task ratios, logging, checkpoints, best/, exact resume, determinism."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.data.build import build_dataset, load_datasets
from fifa_lab.data.records import decode_label_map
from fifa_lab.model.parsing_head import IGNORE_LABEL
from fifa_lab.model import FiFaMLLM, build_tiny
from fifa_lab.train import SampleDataset, TrainConfig, checkpoints, collate, train
from fifa_lab.fict import load_tree
from fifa_lab.train.data import parsing_target, pick_targets, seg_concepts
from fifa_lab.train.trainer import evaluate
from fifa_lab.tasks.fifa11 import RSEG_ANSWER

SIZE = 64
TINY = dict(image_size=SIZE, patch_size=16, vision_hidden_size=32, vision_layers=1, vision_heads=2,
            lm_hidden_size=32, lm_layers=1, lm_heads=2, lm_intermediate_size=64, mask_decoder_dim=8,
            max_length=1024)
CONFIG = dict(steps=6, batch_size=2, lr=1e-3, warmup_steps=2, eval_every=3, eval_samples=2, checkpoint_every=2,
              seed=3)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    # half the identities in validation so the validation split is never empty
    build_dataset(root, n_faces=4, size=SIZE, ratios=(0.5, 0.5, 0.0))
    return root


def _run_dir(data_dir: Path, tmp_path: Path, name: str) -> Path:
    run = tmp_path / name
    shutil.copytree(data_dir / "data", run / "data")
    return run


def _model(data_dir: Path) -> FiFaMLLM:
    samples = load_datasets(data_dir).samples["train"]
    torch.manual_seed(0)
    return build_tiny(list(samples["prompt"]) + list(samples["target"]), tokenizer_vocab_size=1024, **TINY)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "model" / "train_log.jsonl").read_text().splitlines()]


def test_dataset_ratios_and_collate(data_dir: Path) -> None:
    data = load_datasets(data_dir)
    full = SampleDataset(data.samples["train"], data.images["train"], SIZE)
    assert {"Det", "Cls", "RSeg"} <= set(full.tasks)
    aux_off = SampleDataset(data.samples["train"], data.images["train"], SIZE, {"Det": 0, "Cls": 0, "RSeg": 0})
    assert not {"Det", "Cls", "RSeg"} & set(aux_off.tasks) and len(aux_off) < len(full)
    weights = SampleDataset(data.samples["train"], data.images["train"], SIZE, {"Loc": 3.0}).weights()
    tasks = full.tasks
    share = sum(w for w, t in zip(weights, tasks) if t == "Loc")
    assert share == pytest.approx(3.0 / (len(set(tasks)) + 2.0))
    with pytest.raises(ValueError, match="no task left"):
        SampleDataset(data.samples["train"], data.images["train"], SIZE, dict.fromkeys(tasks, 0)).weights()

    model = _model(data_dir)
    rows = [full[i] for i in range(len(full)) if full.tasks[i] in ("Loc", "R-Det")][:4]
    item = rows[0]
    assert item["image"].shape == (3, SIZE, SIZE) and 0 <= item["image"].min() and item["image"].max() <= 1
    batch = collate(model)(rows)
    assert batch["images"].shape == (4, 3, SIZE, SIZE) and batch["regions"].shape == (4, SIZE, SIZE)
    assert [m.shape[1:] for m in batch["seg_masks"]] == [(SIZE, SIZE)] * 4
    # the forgery head's class label is the image's forgery class
    picked = [i for i in range(len(full)) if full.tasks[i] in ("Loc", "R-Det")][:4]
    classes = [data.images["train"][int(data.samples["train"][i]["image_index"])]["forgery_class"] for i in picked]
    assert [FORGERY_CLASSES[k] for k in batch["forgery_classes"].tolist()] == classes
    # the parsing target is the stored FICT label map, shifted so 0 is "no concept"
    record = data.images["train"][int(data.samples["train"][0]["image_index"])]
    stored = decode_label_map(record["label_map"])
    assert torch.equal(full[0]["label_map"], torch.from_numpy(
        cv2.resize(stored.astype(np.int32) + 1, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)).long())
    assert batch["label_maps"].shape == (4, SIZE, SIZE) and batch["label_maps"].dtype == torch.long
    assert int(batch["label_maps"].min()) >= 0
    assert torch.equal(parsing_target(None, SIZE), torch.full((SIZE, SIZE), IGNORE_LABEL))
    batch.pop("tasks")
    assert torch.isfinite(model(**batch)["loss"])


def test_concept_gate_targets_are_the_leaves_each_phrase_names(data_dir: Path) -> None:
    tree = load_tree()
    leaves = lambda concept: tuple(tree.leaf_index[leaf.id] + 1 for leaf in tree.leaves(concept))  # noqa: E731
    target = ("Fake. <p>the left cheek</p> [SEG] shows blur; <p>the cheeks</p> [SEG] too, and a "
              "<p>manipulated area</p> [SEG] and a bare [SEG].")
    picks = seg_concepts(target, tree)
    assert picks == [leaves("cheek_left"), leaves("cheeks"), None, None]
    # RSeg names its concept in the prompt; the answer's [SEG] grounds it
    assert seg_concepts(f"<image>\nSegment the <p>left cheek</p>. {RSEG_ANSWER}", tree) == [leaves("cheek_left")]
    assert len(picks[1]) > len(picks[0]) and set(picks[0]) < set(picks[1])  # a parent is its leaves' union
    targets = pick_targets(picks, 113)
    assert targets.shape == (4, 114) and targets[2:, -1].eq(1).all() and targets[2:, :-1].eq(0).all()
    assert targets[0].nonzero().flatten().tolist() == sorted(picks[0])
    with pytest.raises(ValueError, match="parsing classes"):
        pick_targets(picks, 10)

    # in the training data: RSeg names its sample's concept, Loc names none
    data = load_datasets(data_dir)
    full = SampleDataset(data.samples["train"], data.images["train"], SIZE)
    rseg = next(i for i, t in enumerate(full.tasks) if t == "RSeg")
    concept = json.loads(data.samples["train"][rseg]["meta"])["concept"]
    assert full[rseg]["seg_concepts"] == [leaves(concept)]
    loc = next(i for i, t in enumerate(full.tasks) if t == "Loc" and "[SEG]" in full.samples[i]["target"])
    assert all(pick is None for pick in full[loc]["seg_concepts"])
    batch = collate(_model(data_dir))([full[rseg], full[loc]])
    assert [t.shape[0] for t in batch["seg_concepts"]] == [m.shape[0] for m in batch["seg_masks"]]


def test_train_checkpoints_best_and_exact_resume(data_dir: Path, tmp_path: Path) -> None:
    full_run = _run_dir(data_dir, tmp_path, "full")
    result = train(full_run, _model(data_dir), TrainConfig(**CONFIG))
    log = _log(full_run)
    assert [line["step"] for line in log] == [1, 2, 3, 4, 5, 6]
    for line in log:
        assert all(torch.isfinite(torch.tensor(line[k])) for k in ("loss", "ce", "bce", "dice", "lr"))
        assert line["task_ce"]
    assert "val" in log[2] and "val" in log[5] and 0 <= log[5]["val"]["det_acc"] <= 1
    # keep_checkpoints=2: only the last two remain
    assert [step for step, _ in checkpoints(full_run / "model")] == [4, 6]
    assert (full_run / "model" / "step-6" / "state").is_dir()
    best = FiFaMLLM.from_pretrained(result["best"])
    assert best.config.image_size == SIZE and result["best_step"] in (3, 6)

    # interrupted run: stop after step 4 (schedule still planned for 6), then a fresh call resumes
    resumed = _run_dir(data_dir, tmp_path, "resumed")
    first = train(resumed, _model(data_dir), TrainConfig(**CONFIG, stop_after=4))
    assert first["step"] == 4 and [line["step"] for line in _log(resumed)] == [1, 2, 3, 4]
    # same seed, same loss curve
    assert [line["loss"] for line in _log(resumed)] == [line["loss"] for line in log[:4]]
    second = train(resumed, _model(data_dir), TrainConfig(**CONFIG))
    assert second["start_step"] == 4 and second["step"] == 6
    resumed_log = _log(resumed)
    assert [line["step"] for line in resumed_log] == [1, 2, 3, 4, 5, 6]
    assert [line["loss"] for line in resumed_log] == pytest.approx([line["loss"] for line in log], abs=1e-6)
    a = load_file(full_run / "model" / "step-6" / "model.safetensors")
    b = load_file(resumed / "model" / "step-6" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="stop_after"):
        TrainConfig(steps=4, stop_after=5)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_evaluate_scores_the_whole_split_in_batches_as_one_at_a_time(data_dir: Path) -> None:
    data = load_datasets(data_dir)
    val = SampleDataset(data.samples["validation"], data.images["validation"], SIZE)
    model = _model(data_dir).eval()
    dets = [i for i, t in enumerate(val.tasks) if t == "Det"]
    fakes = [i for i, t in enumerate(val.tasks) if t == "Loc" and len(val.samples[i]["target_masks"])]
    whole = evaluate(model, val, None, batch_size=3)
    assert (whole["det_n"], whole["loc_n"]) == (len(dets), len(fakes)) and len(dets) > 3
    assert evaluate(model, val, None, batch_size=1) == pytest.approx(whole)
    capped = evaluate(model, val, 2)
    assert (capped["det_n"], capped["loc_n"]) == (2, min(2, len(fakes)))
    with pytest.raises(ValueError, match="eval_samples"):
        TrainConfig(eval_samples=0)
