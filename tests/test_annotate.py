"""FiFa-Annotator on known manipulations, bad inputs, noisy pairs and its reliability against ground truth."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fifa_lab.annotate import annotate, artifact_mask, reliability_report
from fifa_lab.annotate.explain import check_age, grounded_phrases, rewrite_with_lm, strip_grounding
from fifa_lab.annotate.mask import RULES, MaskRule
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


def _under(tree, concept, parent):
    return concept == parent or parent in {a.id for a in tree.ancestors(concept)}


def _jpeg(image, quality):
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _check_grounding(notes):
    """AGE text and segments agree: one [SEG] per <p>..</p>, same phrases in order, masks inside."""
    check_age(notes.text, len(notes.segments))
    assert grounded_phrases(notes.text) == [s.phrase for s in notes.segments]
    assert notes.toe_text == strip_grounding(notes.text)
    assert "<p>" not in notes.toe_text and "[SEG]" not in notes.toe_text
    assert all(s.mask.any() and not (s.mask & ~notes.mask).any() for s in notes.segments)


def test_blurred_left_eye_is_the_left_eye_with_blur(tree, face):
    eye = _region(tree, face, "eye_left")
    fake = face.image.copy()
    fake[eye] = cv2.GaussianBlur(face.image, (0, 0), 3)[eye]
    notes = annotate(fake, face.image, label_map=face.label_map)
    assert notes.has_artifact and notes.rule == "adaptive"
    main = [c for c in notes.concepts if c["coverage"] > 0.3]
    assert main and all(_under(tree, c["concept"], "eye_left") for c in main)
    assert sum("blur" in c["artifacts"] for c in main) >= len(main) / 2
    # Most of the eye is hit, so the parent is named instead of its parts.
    assert notes.segments[0].phrase == "the left eye" and "left" in notes.text
    assert notes.text.count("<p>") == notes.text.count("[SEG]") == len(notes.segments)
    _check_grounding(notes)
    assert _iou(notes.mask, eye) > 0.6
    # The raw numbers behind the artifacts are there, per concept.
    iris = notes.attributes["eye_left_iris"]
    assert iris["sharpness"] < 0.6 and iris["pixels"] > 0


def test_lip_colour_shift_is_a_colour_mismatch_on_the_lips(tree, face):
    lips = _region(tree, face, "lips")
    fake = face.image.astype(np.int16)
    fake[lips] += np.array([40, -20, -20], np.int16)
    notes = annotate(np.clip(fake, 0, 255).astype(np.uint8), face.image, label_map=face.label_map)
    named = [c for c in notes.concepts if _under(tree, c["concept"], "lips")]
    assert named and all("colour_mismatch" in c["artifacts"] for c in named)
    assert all(_under(tree, c["concept"], "mouth") for c in notes.concepts if c["coverage"] > 0.3)
    assert "lip" in notes.text
    _check_grounding(notes)


def test_hard_edged_patch_on_a_cheek_leaves_a_blending_seam(tree, face):
    cheek = _region(tree, face, "cheek_left")
    ys, xs = np.nonzero(cheek)
    cy, cx = int(ys.mean()), int(xs.mean())
    patch = np.zeros_like(cheek)
    patch[cy - 8:cy + 8, cx - 8:cx + 8] = True
    fake = face.image.copy()
    fake[patch] = synth_face(104).image[patch]  # skin of another person, pasted without blending
    notes = annotate(fake, face.image, label_map=face.label_map)
    hit = {c["concept"]: c["artifacts"] for c in notes.concepts}
    cheeks = [k for k in hit if _under(tree, k, "cheek_left")]
    assert cheeks and all("blending_seam" in hit[k] for k in cheeks)
    assert _iou(notes.mask, patch) > 0.7


def test_identical_pair_has_no_artifact_under_every_rule(face):
    for rule in RULES:
        notes = annotate(face.image, face.image.copy(), label_map=face.label_map, rule=rule)
        assert not notes.has_artifact and not notes.mask.any()
        assert notes.concepts == [] and notes.segments == [] and notes.attributes == {}
        assert "No manipulation" in notes.text and notes.toe_text == notes.text
        assert not artifact_mask(face.image, face.image.copy(), rule).any()


def test_bad_inputs_get_clear_errors(face):
    small = np.ascontiguousarray(face.image[:128, :100])
    with pytest.raises(ValueError, match="nothing to compare"):
        annotate(face.image, label_map=face.label_map)
    with pytest.raises(ValueError, match=r"256x256.*100x128.*never resizes"):
        annotate(face.image, small, label_map=face.label_map)
    with pytest.raises(ValueError, match="fake has shape"):
        artifact_mask(face.image, small)
    with pytest.raises(ValueError, match="landmarks"):
        annotate(face.image, face.image.copy())
    with pytest.raises(ValueError, match="mask"):
        annotate(face.image, mask=np.ones((10, 10), bool), label_map=face.label_map)
    with pytest.raises(ValueError, match="unknown mask rule"):
        annotate(face.image, face.image.copy(), label_map=face.label_map, rule="top10")


def test_given_mask_without_a_real_uses_the_mirror_twin(tree, face):
    eye = _region(tree, face, "eye_left")
    fake = face.image.copy()
    fake[eye] = cv2.GaussianBlur(face.image, (0, 0), 3)[eye]
    notes = annotate(fake, mask=eye, label_map=face.label_map)
    assert notes.rule == "given" and (notes.mask == eye).all()
    assert {_under(tree, c["concept"], "eye_left") for c in notes.concepts} == {True}
    # No real: the untouched right eye stands in for it.
    assert any("blur" in c["artifacts"] for c in notes.concepts)
    _check_grounding(notes)
    # Landmarks alone are enough to name the concepts.
    assert annotate(fake, mask=eye, landmarks=face.landmarks).concepts
    # An empty given mask is "no artifact".
    assert not annotate(fake, mask=np.zeros_like(eye), label_map=face.label_map).has_artifact


def test_adaptive_rule_beats_the_published_top5_rule_on_small_edits(tree, face):
    iris = _region(tree, face, "eye_left_iris") | _region(tree, face, "eye_right_iris")
    assert iris.mean() < 0.05
    fake = face.image.copy()
    fake[iris] = fake[iris][:, ::-1]  # swap colour channels: a strong, tiny edit
    # As made, and as shared (recompressed: compression noise blurs the edge of so small a change).
    for shared, at_least in ((fake, 0.7), (_jpeg(fake, 90), 0.3)):
        iou = {rule: _iou(artifact_mask(shared, face.image, rule), iris) for rule in ("top5", "adaptive")}
        # top5 marks 5% of the image whatever changed: far more than two irises.
        assert iou["top5"] < 0.1 and iou["adaptive"] > at_least and iou["adaptive"] > 3 * iou["top5"]


def test_recompressed_untouched_image_is_not_an_artifact_for_the_adaptive_rule(face):
    for shared in (_jpeg(face.image, 75), _jpeg(face.image, 95)):
        assert artifact_mask(shared, face.image, "adaptive").mean() < 0.005
        # The published rule always marks 5%; plain Otsu splits the compression noise.
        assert artifact_mask(shared, face.image, "top5").mean() == pytest.approx(0.05, abs=0.001)
        assert artifact_mask(shared, face.image, "otsu").mean() > 0.02


def test_rule_parameters_reach_the_difference_and_the_threshold(face):
    fake = face.image.copy()
    fake[100:120, 100:120] = 255 - fake[100:120, 100:120]
    default = artifact_mask(fake, face.image)
    assert artifact_mask(fake, face.image, edge_weight=0.5, min_area=0.0).sum() > 0
    assert artifact_mask(fake, face.image, difference="lab", min_delta=2.3).sum() > 0
    assert default.sum() >= artifact_mask(fake, face.image, close_radius=0, max_hole=0).sum()
    with pytest.raises(TypeError, match="unknown mask rule parameter"):
        artifact_mask(fake, face.image, radius=3)
    custom = MaskRule("lab_otsu", "Otsu on Delta-E", difference="lab", params={"threshold": "otsu"})
    assert _iou(artifact_mask(fake, face.image, custom), default) > 0.5


def test_phrasings_vary_with_the_seed_and_repeat_with_it(face):
    fake = forge(face, "FS", "swap_feathered", seed=1)
    texts = {annotate(fake.fake, fake.real, label_map=face.label_map, seed=s).text for s in range(6)}
    assert len(texts) > 2
    again = annotate(fake.fake, fake.real, label_map=face.label_map, seed=3)
    same = annotate(fake.fake, fake.real, label_map=face.label_map, seed=3)
    assert again.text == same.text and again.toe_text == same.toe_text
    _check_grounding(again)


def test_reliability_report_scores_every_class_and_rule(tree):
    forgeries, label_maps = [], []
    for seed in range(2):
        face = synth_face(seed)
        flags = {k: v for k, v in face.attributes.items() if isinstance(v, bool)}
        for cls in ("FS", "FR", "FE", "EFS"):
            fake = forge(face, cls, seed=seed)
            forgeries.append(fake)
            label_maps.append(tree.label_map(fake.landmarks, face.size, flags))
    # A real image scored too: nothing to find.
    forgeries.append(SimpleNamespace(fake=face.image, real=face.image, mask=np.zeros(face.size, bool), concepts=[],
                                     forgery_class="real"))
    label_maps.append(face)  # a face stands for its label map
    report = reliability_report(forgeries, label_maps)
    assert set(report["per_class"]) == {"FS", "FR", "FE", "EFS", "real"}
    for by_rule in [*report["per_class"].values(), report["overall"]]:
        assert set(by_rule) == {"top5", "otsu", "adaptive"}
        for entry in by_rule.values():
            values = [*entry["concepts"].values(), entry["mask_iou"], *entry["artifacts"].values(), entry["detection"]]
            assert all(0 <= v <= 1 for v in values) and entry["ms_per_image"] > 0
    assert report["per_class"]["real"]["adaptive"]["mask_iou"] == 1.0
    assert report["per_class"]["real"]["adaptive"]["detection"] == 1.0
    # The published rule is the weakest at outlining the manipulated pixels, and adaptive is best.
    overall = report["overall"]
    assert overall["top5"]["mask_iou"] < overall["adaptive"]["mask_iou"]
    assert report["best_rule"] == "adaptive"
    table = format_report(report)
    assert "best rule: adaptive" in table and table.count("\n") == 3 * 6 + 1


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


def test_lm_rewrite_loads_a_local_model_and_never_breaks_the_grounding(tmp_path, tree, face):
    lips = _region(tree, face, "lips")
    fake = face.image.copy()
    fake[lips] = np.clip(face.image[lips].astype(int) + [30, -15, -15], 0, 255)
    notes = annotate(fake, face.image, label_map=face.label_map)
    model = str(_tiny_local_lm(tmp_path / "lm"))
    text, rewritten = rewrite_with_lm(notes.text, model, max_new_tokens=12)
    # A random model cannot keep the <p>/[SEG] structure, so the template text must come back.
    assert not rewritten and text == notes.text
    assert grounded_phrases(text) == [s.phrase for s in notes.segments]
    with pytest.raises(FileNotFoundError, match="pass the folder"):
        rewrite_with_lm(notes.text, str(tmp_path / "missing"))
    # Through annotate() too: the same grounded text.
    again = annotate(fake, face.image, label_map=face.label_map, rewrite_model=model)
    assert again.text == notes.text and again.toe_text == notes.toe_text
    # A prompt longer than the model's context falls back with a warning instead of failing.
    with pytest.warns(UserWarning, match="context"):
        assert rewrite_with_lm(notes.text, model, max_new_tokens=250) == (notes.text, False)
