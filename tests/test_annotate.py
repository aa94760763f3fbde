"""FiFa-Annotator on known manipulations, bad inputs and its reliability against ground truth."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fifa_lab.annotate import annotate, artifact_mask, reliability_report
from fifa_lab.annotate.reliability import format_report
from fifa_lab.faces import synth_face
from fifa_lab.fict import load_tree
from fifa_lab.forge import forge


@pytest.fixture(scope="module")
def tree():
    return load_tree()


@pytest.fixture(scope="module")
def face():
    return synth_face(4)


def _region(tree, face, concept):
    return tree.visible_masks(face.label_map)[concept]


def _ancestors(tree, concept):
    return {a.id for a in tree.ancestors(concept)}


def test_blurred_left_eye_is_named_as_the_left_eye_with_blur(tree, face):
    eye = _region(tree, face, "eye_left")
    fake = face.image.copy()
    fake[eye] = cv2.GaussianBlur(face.image, (0, 0), 3)[eye]
    notes = annotate(fake, face.image, label_map=face.label_map)
    assert notes.has_artifact and notes.concepts
    main = [c for c in notes.concepts if c["coverage"] > 0.3]
    assert main and all("eye_left" in _ancestors(tree, c["concept"]) or c["concept"].startswith("eyebrow_left")
                        for c in main)
    assert any("blur" in c["artifacts"] for c in main)
    assert "left" in notes.text and notes.text.count("<p>") == notes.text.count("[SEG]") == len(notes.segments)
    assert "<p>" not in notes.toe_text and "[SEG]" not in notes.toe_text
    # Each segment's mask lies inside the annotator's mask.
    assert all(not (s.mask & ~notes.mask).any() for s in notes.segments)


def test_lip_colour_shift_is_a_colour_mismatch_on_the_lips(tree, face):
    lips = _region(tree, face, "lips")
    fake = face.image.astype(np.int16)
    fake[lips] += np.array([40, -20, -20], np.int16)
    notes = annotate(np.clip(fake, 0, 255).astype(np.uint8), face.image, label_map=face.label_map)
    named = [c for c in notes.concepts if "lips" in _ancestors(tree, c["concept"])]
    assert named and all("colour_mismatch" in c["artifacts"] for c in named)
    assert "lip" in notes.text


def test_hard_edged_patch_leaves_a_blending_seam(tree, face):
    cheek = _region(tree, face, "cheek_right_mid")
    fake = face.image.copy()
    fake[cheek] = np.clip(face.image[cheek].astype(int) + 35, 0, 255)
    notes = annotate(fake, face.image, label_map=face.label_map)
    hit = {c["concept"]: c["artifacts"] for c in notes.concepts}
    assert "blending_seam" in hit.get("cheek_right_mid", [])


def test_identical_pair_has_no_artifact(face):
    notes = annotate(face.image, face.image.copy(), label_map=face.label_map)
    assert not notes.has_artifact and not notes.mask.any() and notes.concepts == [] and notes.segments == []
    assert "No manipulation" in notes.text


def test_given_mask_path_and_bad_inputs(tree, face):
    mask = _region(tree, face, "nose")
    notes = annotate(face.image, mask=mask, label_map=face.label_map)
    assert notes.rule == "given" and {"nose" in _ancestors(tree, c["concept"]) for c in notes.concepts} == {True}
    with pytest.raises(ValueError, match="nothing to compare"):
        annotate(face.image, label_map=face.label_map)
    with pytest.raises(ValueError, match="shape"):
        annotate(face.image, face.image[:128, :128].copy(), label_map=face.label_map)
    with pytest.raises(ValueError, match="landmarks"):
        annotate(face.image, face.image.copy())
    # Landmarks alone are enough to name concepts.
    assert annotate(face.image, mask=mask, landmarks=face.landmarks).concepts


def test_adaptive_rule_beats_the_published_top5_rule_on_small_edits(tree, face):
    iris = _region(tree, face, "eye_left_iris") | _region(tree, face, "eye_right_iris")
    fake = face.image.copy()
    fake[iris] = fake[iris][:, ::-1]  # swap colour channels: a strong, tiny edit
    iou = {}
    for rule in ("top5", "adaptive"):
        mask = artifact_mask(fake, face.image, rule)
        iou[rule] = (mask & iris).sum() / (mask | iris).sum()
    # top5 marks 5% of the image whatever changed: far more than two irises.
    assert iou["top5"] < 0.2 and iou["adaptive"] > 0.5


def test_phrasings_vary_with_the_seed_and_repeat_with_it(face):
    fake = forge(face, "FS", "swap_feathered", seed=1)
    texts = {annotate(fake.fake, fake.real, label_map=face.label_map, seed=s).text for s in range(6)}
    assert len(texts) > 1
    again = annotate(fake.fake, fake.real, label_map=face.label_map, seed=3).text
    assert again == annotate(fake.fake, fake.real, label_map=face.label_map, seed=3).text


def test_reliability_report_scores_every_class_and_rule(tree):
    forgeries, label_maps = [], []
    for seed in range(3):
        face = synth_face(seed)
        attributes = {k: v for k, v in face.attributes.items() if isinstance(v, bool)}
        for cls in ("FS", "FR", "FE", "EFS"):
            fake = forge(face, cls, seed=seed)
            forgeries.append(fake)
            label_maps.append(tree.label_map(fake.landmarks, face.size, attributes))
    report = reliability_report(forgeries, label_maps)
    assert set(report["per_class"]) == {"FS", "FR", "FE", "EFS"}
    for by_rule in [*report["per_class"].values(), report["overall"]]:
        for entry in by_rule.values():
            assert 0 <= entry["concepts"]["f1"] <= 1 and 0 <= entry["mask_iou"] <= 1
    assert report["best_rule"] in ("top5", "otsu", "adaptive")
    # The published rule is the weakest at outlining the manipulated pixels.
    assert report["overall"]["top5"]["mask_iou"] < report["overall"]["adaptive"]["mask_iou"]
    assert "best rule" in format_report(report)


def _tiny_local_lm(folder):
    """A randomly initialised 1-layer GPT-2 and a word-level tokenizer, saved like any local HF model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = ["the left eye shows blur <p> </p> [SEG] rewrite this deepfake explanation in fluent english"]
    words.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[EOS]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[PAD]",
                                        eos_token="[EOS]")
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=32, n_positions=256,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_lm_rewrite_loads_a_local_model_and_never_breaks_the_grounding(tmp_path, face):
    from fifa_lab.annotate.explain import grounded_phrases, rewrite_with_lm, strip_grounding

    fake = forge(face, "FE", "lip_colour", seed=0)
    notes = annotate(fake.fake, fake.real, label_map=face.label_map)
    model = str(_tiny_local_lm(tmp_path / "lm"))
    text, rewritten = rewrite_with_lm(notes.text, model, max_new_tokens=12)
    # A random model cannot keep the <p>/[SEG] structure, so the template text must come back.
    assert not rewritten and text == notes.text
    assert grounded_phrases(text) == [s.phrase for s in notes.segments]
    with pytest.raises(FileNotFoundError, match="pass the folder"):
        rewrite_with_lm(notes.text, str(tmp_path / "missing"))
    # Through annotate() too: the same grounded text, the model loaded once.
    again = annotate(fake.fake, fake.real, label_map=face.label_map, rewrite_model=model)
    assert again.text == notes.text and again.toe_text == notes.toe_text
    assert strip_grounding(notes.text) == notes.toe_text
