"""Training recipe: backbone choice, resume-aware model building, task-ratio parsing, the answer views."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import HF_SIZE
from conftest import TINY_CONFIG as TINY
from fifa_lab.data import load_datasets
from fifa_lab.data.build import build_dataset
from fifa_lab.model import FiFaMLLM
from fifa_lab.train import TrainConfig, train
from fifa_lab.train.recipe import ModelChoice, parse_task_ratios, prepare_model, read_log
from fifa_lab.viz.answer import (answer_overlay, grounded_html, grounded_segments, mask_colours, plain_text,
                                 plot_training)



@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    build_dataset(root, n_faces=4, size=HF_SIZE, ratios=(0.5, 0.5, 0.0))
    return root


def _run(data_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(data_dir / "data", tmp_path / "run" / "data")
    return tmp_path / "run"


def test_task_ratios_parse_and_reject_bad_input() -> None:
    assert parse_task_ratios("") == {}
    assert parse_task_ratios("Det=2, Loc=1.5,RSeg=0") == {"Det": 2.0, "Loc": 1.5, "RSeg": 0.0}
    assert parse_task_ratios({"AGE": 3}) == {"AGE": 3.0}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_task_ratios("Det 2")
    with pytest.raises(ValueError, match="not a number"):
        parse_task_ratios("Det=two")
    with pytest.raises(ValueError, match="unknown task"):
        parse_task_ratios("Detection=1")


def test_pretrained_choice_needs_both_paths() -> None:
    with pytest.raises(ValueError, match="vision_path=.*lm_path="):
        ModelChoice(backbone="pretrained", vision_path="/somewhere")
    with pytest.raises(ValueError, match="backbone must be one of"):
        ModelChoice(backbone="huge")


def test_tiny_run_resumes_with_its_own_tokenizer(data_dir: Path, tmp_path: Path) -> None:
    run = _run(data_dir, tmp_path)
    choice = ModelChoice(config=TINY, tokenizer_vocab_size=300)
    model = prepare_model(run, choice)
    assert len(model.tokenizer) <= 300
    config = TrainConfig(steps=4, batch_size=2, warmup_steps=1, eval_every=2, eval_samples=1, checkpoint_every=2,
                         stop_after=2, device="cpu")
    train(run, model, config)
    # a different vocabulary asked for: the checkpoint wins, so the resumed run keeps its ids
    resumed = prepare_model(run, ModelChoice(config=TINY, tokenizer_vocab_size=400))
    assert resumed.tokenizer.get_vocab() == model.tokenizer.get_vocab()
    assert torch.equal(resumed.lm.get_input_embeddings().weight, model.lm.get_input_embeddings().weight)
    result = train(run, resumed, TrainConfig(**{**config.__dict__, "stop_after": None}))
    assert (result["start_step"], result["step"]) == (2, 4)
    assert [row["step"] for row in read_log(run)] == [1, 2, 3, 4]


def test_a_new_model_names_the_concepts_of_its_runs_tree(tmp_path: Path) -> None:
    build_dataset(tmp_path / "coarse", n_faces=2, size=HF_SIZE, ratios=(1.0, 0.0, 0.0), concept_depth=1)
    model = prepare_model(tmp_path / "coarse", ModelChoice(config=TINY, tokenizer_vocab_size=300))
    assert model.concept_tree.to_dict() == load_datasets(tmp_path / "coarse").tree.to_dict()
    assert len(model.concept_tree.leaves()) == 12


def test_pretrained_backbone_with_lora_trains_through_the_same_trainer(data_dir: Path, tmp_path: Path,
                                                                     hf_paths: tuple[Path, Path]) -> None:
    run = _run(data_dir, tmp_path)
    vision, lm = hf_paths
    choice = ModelChoice(backbone="pretrained", vision_path=str(vision), lm_path=str(lm), lora_rank=4,
                         config={"mask_decoder_dim": 8, "pixel_stem_channels": 8, "max_length": 1024})
    model = prepare_model(run, choice)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_before
    result = train(run, model, TrainConfig(steps=3, batch_size=2, lr=1e-2, warmup_steps=1, eval_every=3,
                                           eval_samples=1, checkpoint_every=3, device="cpu"))
    params = dict(model.named_parameters())
    assert all(torch.equal(value, params[n]) for n, value in frozen.items())
    assert any(not torch.equal(value, params[n]) for n, value in lora_before.items())
    best = FiFaMLLM.from_pretrained(result["best"])
    assert best.pretrained_build and best.config.image_size == HF_SIZE
    # the checkpoint rebuilds the LoRA model, not a tiny one
    assert prepare_model(run, ModelChoice()).pretrained_build


def test_grounded_segments_follow_seg_order() -> None:
    text = "Fake. <p>The left eye</p> [SEG] is blurred; <p>the nose</p> looks odd [SEG] and <p>lips</p> [SEG]."
    pieces = grounded_segments(text)
    phrases = [(p.text, p.mask_index) for p in pieces if p.phrase]
    assert phrases == [("The left eye", 0), ("the nose", None), ("", 1), ("lips", 2)]
    assert plain_text(text) == "Fake. The left eye is blurred; the nose looks odd and lips."


def test_grounded_html_colours_match_the_overlay() -> None:
    text = "<p>left eye</p> [SEG] and <p>mouth</p> [SEG]"
    colours = mask_colours(2)
    page = grounded_html(text, hidden={1}, paths=["face > eyes > left eye", "face > mouth"])
    r, g, b = colours[0]
    assert f"rgb({r},{g},{b})" in page and "face &gt; eyes &gt; left eye" in page
    assert "line-through" in page and page.count("border-bottom:3px") == 1
    assert "&lt;script&gt;" in grounded_html("<script>alert(1)</script>")
    image = np.zeros((8, 8, 3), np.uint8)
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4], masks[1, 4:] = True, True
    painted = answer_overlay(image, masks, hidden={1})
    assert painted[:4].any() and not painted[5:7, 1:7].any()


def test_training_plot_draws_the_loss_terms_the_log_has() -> None:
    old = [{"step": s, "loss": 2.0 / s, "ce": 1.0 / s, "bce": 0.5, "dice": 0.9, "forgery": 0.3,
            "task_ce": {"Det": 1.0 / s}} for s in range(1, 5)]
    new = [{**row, "parsing": 0.7} for row in old[:3]] + [{**old[3], "parsing": 0.6, "val": {"det_acc": 0.5,
                                                                                             "loc_miou": 0.2}}]
    labels = [t.get_text() for t in plot_training(old).axes[0].get_legend().get_texts()]
    assert labels == ["loss", "ce", "bce", "dice", "forgery"]
    figure = plot_training(new)
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()][-1] == "parsing"
    assert figure.axes[2].get_lines()[0].get_ydata().tolist() == [0.5]
