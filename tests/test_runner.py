"""Benchmark runner: predictions file, scoring of perfect and external answers, metrics.json with its record."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fifa_lab.data.build import build_dataset, load_datasets
from fifa_lab.eval.runner import (
    CLOSED_CHOICES,
    HEAD_TASKS,
    checkpoint_hash,
    parse_boxes,
    parse_closed,
    predict,
    read_predictions,
    run_benchmark,
    score,
    select_samples,
)
from fifa_lab.io import write_json
from conftest import HF_SIZE as SIZE
from conftest import TINY_CONFIG as TINY
from fifa_lab.model import build_tiny



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    build_dataset(root, n_faces=4, size=SIZE, ratios=(0.5, 0.0, 0.5))
    return root


def _perfect(run_dir: Path) -> list[dict]:
    samples = load_datasets(run_dir).samples["test"]
    lines = []
    for row in samples:
        line = {"sample_id": row["sample_id"], "task": row["task"], "answer": row["target"],
                "masks": row["target_masks"]}
        if row["task"] in CLOSED_CHOICES:
            truth = parse_closed(row["target"], CLOSED_CHOICES[row["task"]])
            line["choice_probs"] = {c: float(c == truth) for c in CLOSED_CHOICES[row["task"]]}
        lines.append(line)
    return lines


def test_parsers() -> None:
    assert parse_closed("It is FAKE.", ("real", "fake")) == "fake"
    assert parse_closed("FS (face swap)", ("real", "FS", "FR")) == "FS"
    assert parse_closed("no idea", ("real", "fake")) is None
    assert parse_boxes("[1, 2, 30, 40], [5.5, 6, 7, 8]") == [[1, 2, 30, 40], [5.5, 6, 7, 8]]
    assert parse_boxes("no artifact") == []
    picked = select_samples(["Det", "Loc", "Det", "Det", "Loc"], per_task=2, seed=0)
    assert picked == sorted(picked) and len(picked) == 4 and select_samples(["Det"] * 5, 2, 0) == \
        select_samples(["Det"] * 5, 2, 0)


def test_reference_answers_score_perfectly(run_dir: Path) -> None:
    metrics = score(_perfect(run_dir), run_dir, "test", SIZE, text=False)
    assert metrics["Det"]["acc"] == 1.0
    assert metrics["Det"]["auc"] == 1.0 or np.isnan(metrics["Det"]["auc"])  # NaN when the split holds one class
    assert metrics["Cls"]["acc"] == 1.0
    for task in ("Loc", "RSeg"):
        if metrics[task]["n"]:
            assert metrics[task]["miou"] == pytest.approx(1.0) and metrics[task]["ciou"] == pytest.approx(1.0)
    assert metrics["TOE"]["bleu4"] == pytest.approx(1.0, abs=1e-6)
    age = metrics["AGE"]
    assert age["miou"] == pytest.approx(1.0) and (np.isnan(age["mask_recall"]) or age["mask_recall"] == 1.0)


def test_wrong_answers_score_low_and_bad_files_fail(run_dir: Path, tmp_path: Path) -> None:
    lines = _perfect(run_dir)
    for line in lines:
        if line["task"] == "Det":
            line["answer"] = "fake" if "real" in line["answer"] else "real"
    assert score(lines, run_dir, "test", SIZE, text=False)["Det"]["acc"] == 0.0
    with pytest.raises(ValueError, match="not in the test split"):
        score([{"sample_id": "nope", "task": "Det", "answer": "real"}], run_dir, "test", SIZE, text=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_id": "x"}\n')
    with pytest.raises(ValueError, match="needs 'sample_id' and 'answer'"):
        read_predictions(bad)


def test_benchmark_writes_predictions_and_metrics(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir / "data", run / "data")
    samples = load_datasets(run).samples["train"]
    torch.manual_seed(0)
    model = build_tiny(list(samples["prompt"]) + list(samples["target"]), tokenizer_vocab_size=400, **TINY)
    model.save_pretrained(run / "model" / "best")
    metrics = run_benchmark(run / "model" / "best", run, "test", per_task=2, max_new_tokens=6)
    written = json.loads((run / "metrics.json").read_text())
    assert written["meta"]["checkpoint_sha256"] == checkpoint_hash(run / "model" / "best")
    assert written["meta"]["split"] == "test" and written["meta"]["seed"] == 0
    assert "torch" in written["meta"]["packages"]
    lines = read_predictions(run / "predictions" / "test.jsonl")
    assert sum(written["meta"]["counts"].values()) == len(lines)
    for line in lines:
        assert len(line["masks"]) == line["answer"].count("[SEG]")
        if line["task"] in CLOSED_CHOICES:
            assert sum(line["choice_probs"].values()) == pytest.approx(1.0, abs=1e-4)
        if line["task"] in HEAD_TASKS:  # fused by default: the most probable choice, the LM's text kept beside
            assert line["answer"] == max(line["choice_probs"], key=line["choice_probs"].get)
            assert sum(line["lm_choice_probs"].values()) == pytest.approx(1.0, abs=1e-4)
            assert "generated" in line
    assert set(metrics) - {"meta"} <= {line["task"] for line in lines}
    assert {"acc", "generated_acc"} <= set(metrics["Det"]) and {"acc", "generated_acc"} <= set(metrics["Cls"])
    # the same file scored again gives the same numbers: predictions fully determine the metrics
    again = json.loads(write_json(tmp_path / "again.json", score(lines, run, "test", SIZE)).read_text())
    assert again == {k: v for k, v in written.items() if k != "meta"}
    # and predicting again writes the same answers (greedy decoding, seeded selection)
    second = predict(model, run, "test", per_task=2, max_new_tokens=6, out=tmp_path / "again.jsonl")
    assert read_predictions(second) == lines


def test_predict_keeps_the_tasks_asked_for_and_perturbs_what_the_model_sees(run_dir: Path, tmp_path: Path) -> None:
    samples = load_datasets(run_dir).samples["train"]
    torch.manual_seed(0)
    model = build_tiny(list(samples["prompt"]) + list(samples["target"]), tokenizer_vocab_size=400, **TINY)
    seen = []
    generate = model.generate
    model.generate = lambda image, *args, **kwargs: seen.append(image.copy()) or generate(image, *args, **kwargs)
    clean = read_predictions(predict(model, run_dir, "test", per_task=2, max_new_tokens=4, out=tmp_path / "a.jsonl",
                                     tasks=["Det", "Loc"]))
    clean_images, seen[:] = list(seen), []
    blurred = read_predictions(predict(model, run_dir, "test", per_task=2, max_new_tokens=4, out=tmp_path / "b.jsonl",
                                       tasks=["Det", "Loc"], perturb=[{"op": "blur", "sigma": 3.0}]))
    assert {line["task"] for line in clean} == {"Det", "Loc"}
    assert [line["sample_id"] for line in clean] == [line["sample_id"] for line in blurred]
    # the model saw blurred copies: less high-frequency energy in every image
    for before, after in zip(clean_images, seen):
        def detail(image):
            return np.abs(np.diff(image.astype(float), axis=1)).mean()
        assert detail(after) < detail(before)
    generated = read_predictions(predict(model, run_dir, "test", per_task=2, max_new_tokens=4, out=tmp_path / "g.jsonl",
                                         tasks=["Det"], closed_answer="generated"))
    assert all("generated" not in line and "lm_choice_probs" not in line for line in generated)
    assert "generated_acc" not in score(generated, run_dir, "test", SIZE, text=False)["Det"]
    with pytest.raises(ValueError, match="closed_answer must be one of generated, fused"):
        predict(model, run_dir, "test", closed_answer="text", out=tmp_path / "e.jsonl")
    with pytest.raises(ValueError, match="no Nope samples"):
        predict(model, run_dir, "test", tasks=["Nope"], out=tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match="blur"):
        predict(model, run_dir, "test", perturb=[{"op": "blur", "sigma": -1}], out=tmp_path / "d.jsonl")


def test_robustness_curves_cover_every_level_and_the_clean_point(run_dir: Path) -> None:
    from fifa_lab.eval.baselines import DetectorConfig, ExpertDetector, ExpertSegmenter, SegmenterConfig
    from fifa_lab.eval.robustness import perturbation, robustness_curves

    samples = load_datasets(run_dir).samples["train"]
    torch.manual_seed(0)
    model = build_tiny(list(samples["prompt"]) + list(samples["target"]), tokenizer_vocab_size=400, **TINY)
    experts = {"detector": ExpertDetector(DetectorConfig()), "segmenter": ExpertSegmenter(SegmenterConfig())}
    curves = robustness_curves(model, run_dir, per_task=2, max_new_tokens=4,
                               sweeps={"jpeg": [80, 30], "resize": [0.5]}, experts=experts, expert_images=3)
    assert [p["level"] for p in curves["sweeps"]["jpeg"]] == [80, 30] and len(curves["sweeps"]["resize"]) == 1
    for point in [curves["clean"], *curves["sweeps"]["jpeg"], *curves["sweeps"]["resize"]]:
        assert 0.0 <= point["det_acc"] <= 1.0 and 0.0 <= point["expert_det_acc"] <= 1.0
        assert set(point) >= {"det_acc", "loc_miou", "expert_det_acc", "expert_loc_miou"}
    assert curves["meta"]["parameters"] == {"jpeg": "quality", "resize": "scale"}
    assert curves["meta"]["expert_images"] == 3
    with pytest.raises(ValueError, match="sweeps are over"):
        perturbation("rotate", 10)
    with pytest.raises(ValueError, match="quality"):
        robustness_curves(model, run_dir, sweeps={"jpeg": [5]})
