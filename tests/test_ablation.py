"""Ablations: every arm builds its data, trains and is scored on the main run's test split; reruns resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fifa_lab.data.build import build_dataset, load_datasets
from fifa_lab.eval import ablation as ablation_module
from fifa_lab.eval.ablation import ABLATIONS, COLUMNS, AblationBudget, run_ablation, run_ablations

SIZE = 64
TINY = dict(image_size=SIZE, patch_size=16, vision_hidden_size=32, vision_layers=1, vision_heads=2,
            lm_hidden_size=32, lm_layers=1, lm_heads=2, lm_intermediate_size=64, mask_decoder_dim=8,
            pixel_stem_channels=8, max_length=1024)
BUDGET = AblationBudget(n_faces=4, steps=2, batch_size=2, model_config=TINY)


@pytest.fixture(scope="module")
def main_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("main")
    build_dataset(run, n_faces=6, size=SIZE, ratios=(0.5, 0.0, 0.5))
    return run


@pytest.fixture(scope="module")
def table(main_run: Path) -> dict:
    return run_ablations(main_run, budget=BUDGET, per_task=2, max_new_tokens=8)


def test_every_arm_is_trained_and_scored_on_the_same_test_samples(main_run, table):
    rows = {row["arm"]: row for row in table["rows"]}
    assert list(rows) == list(ABLATIONS) == ["full", "no_aux", "coarse_tree", "top5_masks"]
    for row in rows.values():
        assert set(COLUMNS) <= set(row)
        assert row["counts"] == rows["full"]["counts"] and row["counts"]["AGE"] == 2
        assert len(row["checkpoint_sha256"]) == 64 and row["split"] == "test"
    assert table["meta"]["budget"]["steps"] == 2 and table["meta"]["per_task"] == 2
    # the predictions answer the main run's test samples
    test_ids = set(load_datasets(main_run).samples["test"]["sample_id"])
    lines = (main_run / "ablations" / "full" / "predictions.jsonl").read_text().splitlines()
    assert {json.loads(line)["sample_id"] for line in lines} <= test_ids


def test_each_arm_changes_only_its_own_choice(main_run, table):
    root = main_run / "ablations"
    cards = {name: json.loads((root / name / "data" / "data_card.json").read_text()) for name in ABLATIONS}
    assert cards["full"]["hash"] == cards["no_aux"]["hash"]  # one build, copied
    assert cards["coarse_tree"]["parameters"]["fict"]["leaves"] == 12
    assert cards["top5_masks"]["parameters"]["annotator_rule"] == "top5"
    assert cards["full"]["parameters"]["fict"]["leaves"] == 112
    assert cards["full"]["parameters"]["annotator_rule"] == "adaptive"
    seen = set()
    for line in (root / "no_aux" / "model" / "train_log.jsonl").read_text().splitlines():
        seen |= set(json.loads(line).get("task_ce", {}))
    assert seen and not seen & {"Det", "Cls", "RSeg"}


def test_a_rerun_reads_finished_arms_back_and_a_new_budget_retrains(main_run, table, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a finished arm must not train again")

    monkeypatch.setattr("fifa_lab.train.train", no_training)
    again = run_ablations(main_run, budget=BUDGET, per_task=2, max_new_tokens=8)
    assert again["rows"] == table["rows"]  # what is returned is what is stored: undefined metrics are None
    monkeypatch.undo()
    longer = AblationBudget(n_faces=4, steps=3, batch_size=2, model_config=TINY)
    row = run_ablation(main_run, "no_aux", longer, per_task=2, max_new_tokens=8)
    log = (main_run / "ablations" / "no_aux" / "model" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3]  # started afresh, not resumed from step 2
    assert row["settings"]["budget"]["steps"] == 3
    # a result of another architecture (here: one stored before the concept gate) is not read back
    stored_path = main_run / "ablations" / "full" / "result.json"
    stored = json.loads(stored_path.read_text())
    assert stored["settings"]["model"]["concept_gate"] is True
    stored["settings"]["model"]["concept_gate"] = False
    stored_path.write_text(json.dumps(stored))
    monkeypatch.setattr("fifa_lab.train.train", no_training)
    with pytest.raises(AssertionError, match="must not train again"):
        run_ablation(main_run, "full", BUDGET, per_task=2, max_new_tokens=8)


def test_bad_arms_budgets_and_missing_data_are_clear_errors(main_run, tmp_path):
    with pytest.raises(ValueError, match="unknown ablation"):
        run_ablations(main_run, arms=["full", "no_attention"], budget=BUDGET)
    with pytest.raises(ValueError, match="steps"):
        AblationBudget(steps=0)
    with pytest.raises(FileNotFoundError, match="build it first"):
        run_ablation(tmp_path, "full", BUDGET)
    with pytest.raises(ValueError, match="already registered"):
        ablation_module.register_ablation(ABLATIONS["full"])
