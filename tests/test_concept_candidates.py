"""Concept candidates: the annotator's concept rule on the model's own maps, and the answers they confine."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from fifa_lab.faces.synth import synth_face
from fifa_lab.fict.tree import coarse_tree, load_tree
from fifa_lab.model import FiFaMLLM, build_tiny
from fifa_lab.model.concept_candidates import propose
from fifa_lab.model.fifa_mllm import TREE_FILE, PhraseConstraint
from fifa_lab.tasks.fifa11 import LOC_PHRASE

SIZE = 64
TINY = dict(image_size=SIZE, patch_size=16, vision_hidden_size=32, vision_layers=2, vision_heads=2,
            lm_hidden_size=64, lm_layers=2, lm_heads=2, lm_intermediate_size=128, mask_decoder_dim=16,
            max_length=64)
CORPUS = ["<image> Where is this face manipulated?", "The face is fake: <p>the left cheek</p> [SEG] is blurred.",
          "<p>the mouth</p> [SEG] and <p>the nose tip</p> [SEG] look odd. <p>manipulated area</p> [SEG]"] * 5


def _sure_logits(label_map: np.ndarray, classes: int) -> torch.Tensor:
    """Parsing logits ``(classes, h, w)`` sure of ``label_map`` (leaf index, -1 none) read at 1/4, at cell centres."""
    low = torch.from_numpy(label_map[2::4, 2::4].astype(np.int64) + 1)
    logits = torch.full((classes, *low.shape), -30.0)
    return logits.scatter_(0, low[None], 30.0)


def _artifact_on(label_map: np.ndarray, leaves: list[str]) -> torch.Tensor:
    tree = load_tree()
    inside = np.isin(label_map, [tree.leaf_index[leaf] for leaf in leaves])
    return torch.where(torch.from_numpy(inside), 30.0, -30.0)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return synth_face(3, size=256).label_map


def test_an_edit_of_a_whole_concept_is_proposed_by_the_name_the_annotator_gives_it(face: np.ndarray) -> None:
    tree = load_tree()
    logits = _sure_logits(face, len(tree.leaves()) + 1)
    cheek = [leaf.id for leaf in tree.leaves("cheek_left")]
    # all five leaves hit: the parent is named, as annotations do; at 1/4 resolution a tiny neighbour can
    # catch a border cell (a quarter of a 4-cell jaw angle), but after the cheek
    found = propose(tree, logits, _artifact_on(face, cheek))
    assert found[0] == "the left cheek" and not any("cheek" in phrase for phrase in found[1:])
    # one leaf of it, and a second edit elsewhere: largest overlap first
    found = propose(tree, logits, _artifact_on(face, ["nose_tip", cheek[0]]))
    sizes = {leaf: int((face == tree.leaf_index[leaf]).sum()) for leaf in ("nose_tip", cheek[0])}
    expected = sorted(sizes, key=sizes.get, reverse=True)
    assert found[:2] == [f"the {tree.get(leaf).name}" for leaf in expected]


def test_nothing_is_proposed_without_an_edit_at_most_the_limit_with_a_large_one_and_bad_maps_refused(
        face: np.ndarray) -> None:
    tree = load_tree()
    logits = _sure_logits(face, len(tree.leaves()) + 1)
    assert propose(tree, logits, torch.full((256, 256), -30.0)) == []
    assert len(propose(tree, logits, torch.full((256, 256), 30.0), limit=3)) == 3
    with pytest.raises(ValueError, match="parsing logits must be"):
        propose(tree, logits[:13], torch.full((256, 256), 30.0))
    with pytest.raises(ValueError, match="artifact logits"):
        propose(tree, logits, torch.full((1, 256, 256), 30.0))


def test_a_phrase_that_stands_alone_shares_no_answer_and_no_phrase_opens_once_none_is_left() -> None:
    start, end = 1, 2
    cheek, mouth, loc = [5, 6], [5, 7], [8, 9]
    constraint = PhraseConstraint([cheek, mouth, loc], start, end, alone=[loc])
    assert constraint.may_open([]) and constraint.allowed([4, start]) == [5, 8]
    named_cheek = [start, *cheek, end, 3]
    assert constraint.allowed([*named_cheek, start]) == [5] and constraint.allowed([*named_cheek, start, 5]) == [7]
    assert constraint.may_open(named_cheek) and not constraint.may_open([*named_cheek, start, *mouth, end])
    assert not constraint.may_open([start, *loc, end])  # Loc's one phrase, and no other after it
    assert constraint.allowed([start, *loc, end, 4]) is None  # outside a phrase any token may follow


def test_whole_image_answers_name_only_the_proposed_concepts() -> None:
    torch.manual_seed(0)
    model = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY).eval()
    tree = model.concept_tree
    label_map = synth_face(3, size=SIZE).label_map
    encoded = model.encode([CORPUS[0]] * 3)
    with torch.no_grad():
        run = model._run(torch.rand(3, 3, SIZE, SIZE), encoded["input_ids"], encoded["attention_mask"])
    run.parse_logits = _sure_logits(label_map, model.config.parsing_classes)[None].expand(3, -1, -1, -1)
    edited = _artifact_on(label_map, [leaf.id for leaf in tree.leaves("cheek_left")])
    run.artifact_logits = torch.stack([edited, edited, torch.full_like(edited, -30.0)])
    region = np.ones((SIZE, SIZE), bool)
    proposed, asked, unedited = model._phrase_constraints(run, [None, region, None], None, True)
    words = {tuple(model._tokenize(p)) for p in ("the left cheek", LOC_PHRASE)}
    assert words <= set(proposed.phrases) and len(proposed.phrases) < 5  # the cheek (and maybe a border leaf)
    assert proposed.alone == {tuple(model._tokenize(LOC_PHRASE))}
    assert len(asked.phrases) == len(unedited.phrases) > 100  # a region, or no edit: the whole vocabulary
    assert all(len(c.phrases) > 100 for c in model._phrase_constraints(run, [None] * 3, None, False))
    given = model._phrase_constraints(run, [None] * 3, ["the mouth"], True)
    assert all(c.phrases == [tuple(model._tokenize("the mouth"))] for c in given)


def test_the_concept_tree_is_saved_with_the_model_and_must_fit_the_parsing_head(tmp_path) -> None:
    torch.manual_seed(0)
    tiny = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY)
    coarse = coarse_tree(load_tree(), 1)
    model = FiFaMLLM(tiny.config, tiny.tokenizer, concept_tree=coarse).eval()
    model.save_pretrained(tmp_path / "coarse")
    assert FiFaMLLM.from_pretrained(tmp_path / "coarse").concept_tree.to_dict() == coarse.to_dict()
    (tmp_path / "coarse" / TREE_FILE).unlink()  # a checkpoint from before the tree was saved: the FICT
    assert FiFaMLLM.from_pretrained(tmp_path / "coarse").concept_tree.to_dict() == load_tree().to_dict()
    (tmp_path / "coarse" / TREE_FILE).write_text(json.dumps({"name": "broken"}))
    with pytest.raises(ValueError, match=TREE_FILE):
        FiFaMLLM.from_pretrained(tmp_path / "coarse")
    with pytest.raises(ValueError, match="112 leaves but the parsing head 13 classes"):
        FiFaMLLM(dataclasses.replace(tiny.config, parsing_classes=13), tiny.tokenizer)
