"""FiFa-MLLM model core: shapes, losses, grounding, persistence, regions, input validation, tokenizer."""
from __future__ import annotations

import copy
import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from fifa_lab.artifacts import FORGERY_CLASSES
from fifa_lab.model import FiFaConfig, FiFaMLLM, Response, build_tiny, parse_phrases, train_tokenizer
from fifa_lab.model.fifa_mllm import IGNORE_INDEX, answer_ce
from fifa_lab.model.parsing_head import IGNORE_LABEL
from fifa_lab.model.region_encoder import boxes_to_masks
from fifa_lab.tasks.fifa11 import RSEG_ANSWER
from fifa_lab.tasks.registry import IMAGE_TOKEN, REGION_TOKEN, SEG_TOKEN

SIZE = 64
TINY = dict(image_size=SIZE, patch_size=16, vision_hidden_size=32, vision_layers=2, vision_heads=2,
            lm_hidden_size=64, lm_layers=2, lm_heads=2, lm_intermediate_size=128, mask_decoder_dim=16,
            max_length=64)
PROMPTS = ["<image> Where is this face manipulated?", "<image> Explain what is odd about <region>."]
TARGETS = ["The face is fake: <p>the left eye</p> [SEG] is blurred.",
           "It is real; <p>the mouth</p> [SEG] looks natural."]
CORPUS = PROMPTS + TARGETS + ["<image> Is this face real or fake?", "Fake. <p>nose</p> [SEG]"] * 5


def _square(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE)
    mask[y0:y1, x0:x1] = 1
    return mask


@pytest.fixture(scope="module")
def model() -> FiFaMLLM:
    torch.manual_seed(0)
    return build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY).eval()


@pytest.fixture(scope="module")
def batch(model: FiFaMLLM) -> dict:
    torch.manual_seed(1)
    encoded = model.encode(PROMPTS, TARGETS)
    return dict(images=torch.rand(2, 3, SIZE, SIZE), regions=torch.stack([torch.zeros(SIZE, SIZE),
                                                                           _square(40, 60, 20, 44)]),
                seg_masks=[_square(10, 30, 8, 28)[None], _square(44, 56, 20, 44)[None]], **encoded)


def test_forward_shapes_and_finite_losses(model: FiFaMLLM, batch: dict) -> None:
    out = model(**batch)
    length = batch["input_ids"].shape[1] - 1 + model.config.num_image_tokens
    assert out["logits"].shape == (2, length, model.config.vocab_size)
    for key in ("loss", "ce", "bce", "dice"):
        assert out[key].ndim == 0 and torch.isfinite(out[key]) and out[key] > 0
    c = model.config
    assert torch.isclose(out["loss"], c.ce_weight * out["ce"] + c.bce_weight * out["bce"] + c.dice_weight * out["dice"])
    assert (c.ce_weight, c.bce_weight, c.dice_weight) == (1.0, 2.0, 1.0)
    counts = model.parameter_counts()
    assert set(counts) == {"image_encoder", "projector", "region_encoder", "lm", "mask_decoder", "forgery_head",
                           "parsing_head", "total"}
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_answer_ce_averages_per_token_or_by_the_root_of_each_answer_length() -> None:
    # two classes: a token with logits (0, 0) costs ln 2, one with (3, 0) and target 0 costs ln(1 + e^-3)
    short, long = np.log(2.0), np.log1p(np.exp(-3.0))
    logits = torch.zeros(2, 6, 2)
    logits[1, :, 0] = 3.0
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 5] = 0  # row 0: one scored token (predicted at position 4)
    labels[1, 2:] = 0  # row 1: four scored tokens
    assert answer_ce(logits, labels, "token").item() == pytest.approx((short + 4 * long) / 5, rel=1e-6)
    # square: the sum of a row's losses / sqrt(n), over the sum of sqrt(n)
    assert answer_ce(logits, labels, "square").item() == pytest.approx((short / 1 + 4 * long / 2) / (1 + 2), rel=1e-6)
    labels[0, 2:] = 0  # equal lengths: square is the plain token average
    assert answer_ce(logits, labels, "square").item() == pytest.approx((4 * short + 4 * long) / 8, rel=1e-6)
    assert answer_ce(logits, torch.full((2, 6), IGNORE_INDEX), "square").item() == 0.0


def test_answer_averaging_switches_the_ce_and_only_the_ce(model: FiFaMLLM, batch: dict) -> None:
    square = copy.deepcopy(model)
    square.config = dataclasses.replace(model.config, answer_averaging="square")
    token_out, square_out = model(**batch), square(**batch)
    run = model._run(batch["images"], batch["input_ids"], batch["attention_mask"], batch["labels"],
                     batch["regions"])
    # "token" is the LM's own loss to the bit (the condition is closed at init, so the LM's input is run.embeds)
    assert not run.condition.any()
    reference = model.lm(inputs_embeds=run.embeds, attention_mask=run.attention_mask, labels=run.labels).loss
    assert torch.equal(token_out["ce"], reference)
    assert torch.isclose(square_out["ce"], answer_ce(token_out["logits"], run.labels, "square"))
    assert not torch.isclose(square_out["ce"], token_out["ce"])  # the two answers differ in length
    for key in ("bce", "dice", "forgery", "parsing", "concept"):
        assert torch.equal(square_out[key], token_out[key])
    with pytest.raises(ValueError, match="answer_averaging must be one of token, square"):
        FiFaConfig(answer_averaging="sample")


def test_forgery_loss_is_detection_peak_and_artifact_terms(model: FiFaMLLM, batch: dict) -> None:
    from fifa_lab.model.fifa_mllm import _mask_losses

    is_fake = torch.tensor([0.0, 1.0])
    artifact = torch.stack([torch.zeros(SIZE, SIZE), _square(20, 30, 20, 30)])
    out = model(**batch, is_fake=is_fake, artifact_masks=artifact)
    run = model._run(batch["images"], batch["input_ids"], batch["attention_mask"], regions=batch["regions"])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    # the peak term is what stops the map from keeping a hot spot on real faces
    expected = bce(run.fake_logits, is_fake) + bce(run.evidence[:, 0], is_fake) \
        + sum(_mask_losses(run.artifact_logits, artifact))
    assert torch.isclose(out["forgery"], expected)
    c = model.config
    assert torch.isclose(out["loss"], c.ce_weight * out["ce"] + c.bce_weight * out["bce"] + c.dice_weight * out["dice"]
                         + c.forgery_weight * out["forgery"])
    with pytest.raises(ValueError, match="is_fake must be"):
        model(**batch, is_fake=is_fake[:1], artifact_masks=artifact)
    # the forgery classes add their cross-entropy (a real image, then an FE one)
    classes = torch.tensor([0, 3])
    with_classes = model(**batch, is_fake=is_fake, artifact_masks=artifact, forgery_classes=classes)
    assert run.class_logits.shape == (2, len(FORGERY_CLASSES))
    cross_entropy = torch.nn.functional.cross_entropy(run.class_logits, classes)
    assert torch.isclose(with_classes["forgery"], expected + cross_entropy)
    with pytest.raises(ValueError, match="forgery_classes must be"):
        model(**batch, is_fake=is_fake, artifact_masks=artifact, forgery_classes=classes[:1])


def test_forensic_token_reads_the_forgery_class_probabilities(model: FiFaMLLM) -> None:
    head = model.forgery_head
    evidence = torch.tensor([[1.0, -2.0, 0.1]])
    first, second = (torch.nn.functional.one_hot(torch.tensor([k]), len(FORGERY_CLASSES)).float() * 20
                     for k in (1, 4))
    assert not torch.allclose(head.token(evidence, first), head.token(evidence, second))
    with pytest.raises(ValueError, match="forgery classes"):
        head.token(evidence)
    with pytest.raises(ValueError, match="forgery_classes must be 0"):
        FiFaConfig(**TINY, vocab_size=10, forgery_classes=3)


def test_parsing_loss_reads_cell_centres_ignores_unknown_and_rejects_foreign_classes(model: FiFaMLLM,
                                                                                   batch: dict) -> None:
    head = model.parsing_head
    classes, low = model.config.parsing_classes, SIZE // 4
    labels = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    labels[:, :SIZE // 2] = 5  # top half: leaf 4
    labels[1] = IGNORE_LABEL  # the second image has no label map
    # logits that put everything on the true class at each 4x4 cell centre: loss near 0
    sure = torch.full((2, classes, low, low), -20.0)
    sure[:, 0] = 20.0
    sure[:, 5, :low // 2] = 20.0
    sure[:, 0, :low // 2] = -20.0
    assert head.loss(sure, labels) < 1e-6
    flat = torch.zeros(2, classes, low, low)
    assert head.loss(flat, labels) == pytest.approx(np.log(classes), rel=1e-5)  # uniform: log(classes)
    assert head.loss(flat, torch.full_like(labels, IGNORE_LABEL)) == 0
    with pytest.raises(ValueError, match="parsing_classes"):
        head.loss(flat, torch.full_like(labels, classes))
    # through forward: the weighted parsing term is part of the loss
    out = model(**batch, label_maps=labels)
    c = model.config
    assert out["parsing"] > 0 and torch.isclose(out["loss"], c.ce_weight * out["ce"] + c.bce_weight * out["bce"]
                                                + c.dice_weight * out["dice"] + c.parsing_weight * out["parsing"])
    with pytest.raises(ValueError, match="label_maps must be"):
        model(**batch, label_maps=labels[:, :8])
    off = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, parsing_weight=0.0, concept_gate=False,
                     concept_token=False)
    assert off.parsing_head is None and "parsing_head" not in off.parameter_counts()
    with pytest.raises(ValueError, match="concept_gate"):  # the gate reads the head
        FiFaConfig(parsing_weight=0.0)
    with pytest.raises(ValueError, match="concept_token"):  # so does the concept token
        FiFaConfig(parsing_weight=0.0, concept_gate=False)


def test_parsing_context_layer_reads_neighbours_and_older_heads_load_without_it(tmp_path) -> None:
    torch.manual_seed(0)
    deep = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, parsing_hidden=8, parsing_resolution=4).eval()
    head, low = deep.parsing_head, SIZE // 4
    pixel = torch.rand(1, TINY["mask_decoder_dim"], low, low)
    logits = head(pixel)
    assert logits.shape == (1, deep.config.parsing_classes, low, low)
    nudged = pixel.clone()
    nudged[0, :, 5, 6] += 1.0
    change = (head(nudged) - logits).abs().sum(1)[0]
    # a 3x3 layer: the nudged pixel and its 8 neighbours move; further away only the GroupNorm statistics
    # shift, by far less (9x to 17x less over four initialisations, so the bound leaves room)
    near = change[4:7, 5:8].clone()
    change[4:7, 5:8] = 0
    assert near.min() > 5 * change.max()
    with pytest.raises(ValueError, match="parsing_hidden"):
        FiFaConfig(parsing_hidden=-1)
    linear = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, parsing_hidden=0, parsing_context_blocks=0,
                        parsing_resolution=4).eval()
    assert linear.parsing_head.context is None
    loaded = _reload_without(linear, tmp_path, "parsing_hidden")
    assert loaded.parsing_head.context is None
    _assert_same_grounding(loaded, linear)


def test_parsing_context_blocks_widen_the_view_and_older_heads_load_without_them(tmp_path) -> None:
    torch.manual_seed(0)
    wide = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, parsing_hidden=8, parsing_resolution=4).eval()
    head, low = wide.parsing_head, SIZE // 4
    assert [block.body[0].dilation for block in head.wide] == [(2, 2), (4, 4), (8, 8)]
    pixel = torch.rand(1, TINY["mask_decoder_dim"], low, low)
    nudged = pixel.clone()
    nudged[0, :, 3, 3] += 1.0
    with torch.no_grad():
        # a new block is the identity: the 3x3 layer alone decides, as before the blocks
        change = (head(nudged) - head(pixel)).abs().sum(1)[0]
        assert change[3, 7] < change[3, 4] / 20
        for block in head.wide:
            torch.nn.init.normal_(block.body[-1].weight, std=0.5)
        change = (head(nudged) - head(pixel)).abs().sum(1)[0]
    # trained, the nudge reaches up to 1 + 2 + 4 + 8 cells away (taps 2, 4 and 8 cells apart): cells 4 and 12
    # away move by a sizeable share of what the neighbour does (seed 0: 0.6 and 0.25 of it)
    assert change[3, 7] > change[3, 4] / 5 and change[3, 15] > change[3, 4] / 20
    with pytest.raises(ValueError, match="parsing_context_blocks"):
        FiFaConfig(parsing_hidden=0)  # the blocks widen the 3x3 layer's view: none without it
    old = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, parsing_context_blocks=0, parsing_resolution=4).eval()
    assert len(old.parsing_head.wide) == 0
    loaded = _reload_without(old, tmp_path, "parsing_context_blocks")
    assert len(loaded.parsing_head.wide) == 0
    _assert_same_grounding(loaded, old)


def test_parsing_head_refined_at_half_resolution_starts_as_the_quarter_map_and_reads_the_image(tmp_path) -> None:
    torch.manual_seed(0)
    fine = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY).eval()
    head, low = fine.parsing_head, SIZE // 4
    assert fine.config.parsing_resolution == 2
    pixel, images = torch.rand(1, TINY["mask_decoder_dim"], low, low), torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = head(pixel, images)
        assert logits.shape == (1, fine.config.parsing_classes, 2 * low, 2 * low)
        # the correction starts at zero: the 1/4 map (context, blocks, prior), upsampled
        hidden = head.wide(head.context(torch.cat([pixel, _coordinates(low)], 1)))
        quarter = head.classify(hidden) + head.prior
        torch.testing.assert_close(logits, torch.nn.functional.interpolate(quarter, scale_factor=2, mode="bilinear"))
        # trained, it reads the image at 1/2: a change in one 2x2 pixel block moves that cell most
        torch.nn.init.normal_(head.fine_classify.weight, std=0.5)
        nudged = images.clone()
        nudged[0, :, 20:22, 40:42] += 1.0
        change = (head(pixel, nudged) - head(pixel, images)).abs().sum(1)[0]
    assert change.argmax() == 10 * 2 * low + 20 and change[10, 20] > 3 * change[10, 24]
    with pytest.raises(ValueError, match="also reads the images"):
        head(pixel)
    # the loss reads each 2x2 cell's centre: a label map right there and wrong elsewhere scores as all right
    labels = torch.randint(0, fine.config.parsing_classes, (1, 2 * low, 2 * low))
    sure = torch.nn.functional.one_hot(labels, fine.config.parsing_classes).permute(0, 3, 1, 2).float() * 50
    full = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
    full[:, 1::2, 1::2] = labels
    assert float(head.loss(sure, full)) < 1e-6
    with pytest.raises(ValueError, match="parsing_resolution must be 4 or 2"):
        FiFaConfig(parsing_resolution=3)
    with pytest.raises(ValueError, match="2 needs parsing_hidden"):
        FiFaConfig(parsing_hidden=0, parsing_context_blocks=0)
    quarter_model = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, parsing_resolution=4).eval()
    loaded = _reload_without(quarter_model, tmp_path, "parsing_resolution")
    assert loaded.config.parsing_resolution == 4 and loaded.parsing_head.fine is None
    _assert_same_grounding(loaded, quarter_model)


def _coordinates(side: int) -> torch.Tensor:
    """The parsing head's position channels ``(1, 2, side, side)``: x then y, from -1 to 1."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    return torch.stack([xs, ys])[None]


def _reload_without(model: FiFaMLLM, tmp_path, *fields: str) -> FiFaMLLM:
    """``model`` saved and loaded again with ``fields`` left out of its config, as an older checkpoint wrote it."""
    model.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    for name in fields:
        del config[name]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    return FiFaMLLM.from_pretrained(tmp_path / "old")


def _assert_same_grounding(loaded: FiFaMLLM, original: FiFaMLLM) -> None:
    image = np.full((SIZE, SIZE, 3), 90, np.uint8)
    answer = "<p>the mouth</p> [SEG]"
    assert np.array_equal(loaded.ground(image, PROMPTS[0], answer).masks,
                          original.ground(image, PROMPTS[0], answer).masks)


def test_parsing_head_reads_position_and_older_heads_load_without_it(tmp_path) -> None:
    torch.manual_seed(0)
    placed = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, parsing_resolution=4).eval()
    head, low = placed.parsing_head, SIZE // 4
    assert placed.config.parsing_position and head.prior.shape == (placed.config.parsing_classes, low, low)
    assert not head.prior.any()  # the learned map starts neutral
    same = torch.ones(1, TINY["mask_decoder_dim"], low, low)  # every pixel looks alike
    with torch.no_grad():
        plain = head(same)
        # the coordinates alone already tell pixels apart
        assert not torch.allclose(plain[0, :, 3, 3], plain[0, :, 3, low - 4])
        head.prior[5, :, : low // 2] = 100.0  # class 5 lies on the left
        sure = head(same)[0].argmax(0)
    assert (sure[:, : low // 2] == 5).all() and (sure[:, low // 2:] != 5).all()
    old = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, parsing_position=False, parsing_resolution=4).eval()
    assert old.parsing_head.prior is None and torch.allclose(old.parsing_head(same)[0, :, 3, 3],
                                                             old.parsing_head(same)[0, :, 3, low - 4])
    loaded = _reload_without(old, tmp_path, "parsing_position")
    assert loaded.parsing_head.prior is None
    _assert_same_grounding(loaded, old)


def test_checkpoint_from_before_the_parsing_head_loads_without_one(model: FiFaMLLM, tmp_path) -> None:
    off = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, parsing_weight=0.0, concept_gate=False,
                     concept_token=False)
    off.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    # what an older checkpoint wrote
    del config["parsing_weight"], config["parsing_classes"], config["concept_gate"], config["concept_weight"]
    del config["concept_token"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = FiFaMLLM.from_pretrained(tmp_path / "old")
    assert loaded.parsing_head is None and loaded.config.parsing_weight == 0.0
    assert loaded.mask_decoder.concept_pick is None and not loaded.config.concept_gate


def test_checkpoint_from_before_the_concept_gate_loads_without_it(tmp_path) -> None:
    torch.manual_seed(0)
    old = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, concept_gate=False)
    old.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["concept_gate"], config["concept_weight"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = FiFaMLLM.from_pretrained(tmp_path / "old")
    assert loaded.parsing_head is not None and loaded.mask_decoder.concept_pick is None
    image = np.full((SIZE, SIZE, 3), 90, np.uint8)
    answer = "<p>the mouth</p> [SEG]"
    assert np.array_equal(loaded.ground(image, PROMPTS[0], answer).masks, old.eval().ground(image, PROMPTS[0], answer).masks)


def test_pixel_refine_blocks_start_as_the_identity_and_learn(model: FiFaMLLM, batch: dict) -> None:
    assert len(model.mask_decoder.refine) == model.config.pixel_refine_blocks == 2
    with pytest.raises(ValueError, match="pixel_refine_blocks"):
        FiFaConfig(pixel_refine_blocks=-1)
    _, grid = model.image_encoder(batch["images"])
    with torch.no_grad():
        refined = model.mask_decoder.pixel_embeddings(grid, batch["images"])
        plain = copy.deepcopy(model.mask_decoder)
        plain.refine = torch.nn.ModuleList()
        assert torch.equal(refined, plain.pixel_embeddings(grid, batch["images"]))
    trained = copy.deepcopy(model).train()
    trained(**batch)["loss"].backward()
    # the zeroed last layer gets a gradient, so the blocks leave the identity on the first step
    assert all(float(block.body[-1].weight.grad.abs().sum()) > 0 for block in trained.mask_decoder.refine)


def test_checkpoint_from_before_the_refine_blocks_loads_without_them(tmp_path) -> None:
    torch.manual_seed(0)
    old = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, pixel_refine_blocks=0).eval()
    old.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["pixel_refine_blocks"]  # what an older checkpoint wrote
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = FiFaMLLM.from_pretrained(tmp_path / "old")
    assert loaded.config.pixel_refine_blocks == 0 and len(loaded.mask_decoder.refine) == 0
    image = np.full((SIZE, SIZE, 3), 90, np.uint8)
    answer = "<p>the mouth</p> [SEG]"
    assert np.array_equal(loaded.ground(image, PROMPTS[0], answer).masks, old.ground(image, PROMPTS[0], answer).masks)


def test_concept_evidence_reads_artifact_coverage_and_share_per_concept() -> None:
    from fifa_lab.model.parsing_head import concept_evidence

    # 2 classes on a 4x4 grid: class 1 sure on the top two rows (8 cells), class 0 sure below
    logits = torch.full((1, 2, 4, 4), -30.0)
    logits[0, 1, :2] = 30.0
    logits[0, 0, 2:] = 30.0
    # artifact map sure on 4 cells inside class 1 (one row of 8x8 full-resolution pixels per cell)
    artifact = torch.full((1, 8, 8), -30.0)
    artifact[0, :2, :] = 30.0
    coverage, share = concept_evidence(logits, artifact)[0].split(2)
    assert torch.allclose(coverage, torch.tensor([0.0, 4 / 9]), atol=1e-5)  # 4 of class 1's 8 cells (+1)
    assert torch.allclose(share, torch.tensor([0.0, 4 / 5]), atol=1e-5)  # all 4 artifact cells (+1)
    # no artifact anywhere: nothing to read, and no 0 / 0
    assert torch.allclose(concept_evidence(logits, torch.full((1, 8, 8), -30.0)), torch.zeros(1, 4), atol=1e-5)
    with pytest.raises(ValueError, match="artifact logits"):
        concept_evidence(logits, artifact[0])


def test_concept_token_is_the_last_image_embedding_and_moves_with_the_artifact_map(model: FiFaMLLM,
                                                                                  batch: dict) -> None:
    assert model.config.concept_token and model.config.forensic_token
    run = model._run(batch["images"], batch["input_ids"], batch["attention_mask"], regions=batch["regions"])
    at = int((batch["input_ids"][0] == model.token_ids[IMAGE_TOKEN]).int().argmax())
    last = at + model.config.num_image_tokens - 1
    expected = model.parsing_head.token(run.parse_logits, run.artifact_logits)
    assert torch.allclose(run.embeds[:, last], expected)
    moved = model.parsing_head.token(run.parse_logits, run.artifact_logits + 5.0)
    assert not torch.allclose(moved, expected)
    with pytest.raises(RuntimeError, match="concept_token=False"):
        FiFaMLLM(dataclasses.replace(model.config, concept_token=False), model.tokenizer) \
            .parsing_head.token(run.parse_logits, run.artifact_logits)


def test_checkpoint_from_before_the_concept_token_loads_without_it(tmp_path) -> None:
    torch.manual_seed(0)
    old = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, concept_token=False).eval()
    old.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["concept_token"]  # what an older checkpoint wrote
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = FiFaMLLM.from_pretrained(tmp_path / "old")
    assert loaded.parsing_head.to_token is None and loaded.config.num_image_tokens == old.config.num_image_tokens
    image = np.full((SIZE, SIZE, 3), 90, np.uint8)
    assert loaded.generate(image, PROMPTS[0], max_new_tokens=6).text == old.generate(
        image, PROMPTS[0], max_new_tokens=6).text


def test_forensic_condition_starts_as_a_no_op_and_shifts_every_position(model: FiFaMLLM, batch: dict) -> None:
    without = copy.deepcopy(model)
    without.config = dataclasses.replace(model.config, forensic_condition=False)
    args = (batch["images"], batch["input_ids"], batch["attention_mask"])
    run = model._run(*args, regions=batch["regions"])
    assert run.condition.shape == (2, model.config.lm_hidden_size) and not run.condition.any()
    assert torch.equal(run.output.logits, without._run(*args, regions=batch["regions"]).output.logits)
    shifted = copy.deepcopy(model)
    torch.nn.init.constant_(shifted.forgery_head.condition_gate, 1.0)
    after = shifted._run(*args, regions=batch["regions"])
    assert not torch.allclose(after.output.logits, run.output.logits)
    assert torch.equal(after.embeds, run.embeds)  # the gate's phrase embeddings stay unconditioned
    with pytest.raises(RuntimeError, match="forensic_condition=False"):
        FiFaMLLM(dataclasses.replace(model.config, forensic_condition=False), model.tokenizer) \
            .forgery_head.condition(run.evidence, run.class_logits)


def test_checkpoint_from_before_the_forgery_classes_and_condition_loads_without_them(tmp_path) -> None:
    torch.manual_seed(0)
    old = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY, forgery_classes=0, forensic_condition=False)
    old.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["forgery_classes"], config["forensic_condition"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = FiFaMLLM.from_pretrained(tmp_path / "old")
    assert loaded.forgery_head.classify is None and loaded.config.forgery_classes == 0
    assert loaded.forgery_head.to_condition is None and not loaded.config.forensic_condition
    image = np.full((SIZE, SIZE, 3), 90, np.uint8)
    assert loaded.generate(image, PROMPTS[0], max_new_tokens=6).text == old.eval().generate(
        image, PROMPTS[0], max_new_tokens=6).text


def test_concept_gate_confines_a_mask_to_the_picked_parsing_classes() -> None:
    from fifa_lab.model.mask_decoder import GATE_FLOOR, MaskDecoder

    config = FiFaConfig(**TINY, vocab_size=10, parsing_classes=4)
    decoder = MaskDecoder(config)
    low = SIZE // 4
    parse = torch.full((4, low, low), -30.0)
    parse[2, :, :low // 2] = 30.0  # class 2 on the left half
    parse[3, :, low // 2:] = 30.0  # class 3 on the right half
    with torch.no_grad():
        for layer in (decoder.query_proj[-1], decoder.concept_pick[-1], decoder.query_bias):
            layer.weight.zero_()
            layer.bias.zero_()
        decoder.query_bias.bias.fill_(3.0)  # "mark all of the picked concept"
        decoder.concept_pick[-1].bias.copy_(torch.tensor([-30.0, -30.0, 30.0, -30.0, -30.0]))  # class 2, not open
    hidden = torch.randn(1, config.lm_hidden_size)
    with torch.no_grad():
        logits = decoder(hidden, torch.randn(config.mask_decoder_dim, low, low), parse, hidden)[0]
    assert (logits[:, :SIZE // 2 - 4] > 0).all() and (logits[:, SIZE // 2 + 4:] < 0).all()
    assert float(logits.min()) == pytest.approx(3.0 + np.log(GATE_FLOOR), abs=1e-3)
    # answering, the gate is applied at full size, to the upsampled parsing logits: the border lies where
    # the two classes' logits cross (the middle), to the pixel
    decoder.eval()
    with torch.no_grad():
        sharp = decoder(hidden, torch.randn(config.mask_decoder_dim, low, low), parse, hidden)[0]
    assert (sharp[:, :SIZE // 2] > 0).all() and (sharp[:, SIZE // 2:] < 0).all()
    assert not (logits[:, :SIZE // 2] > 0).all()  # the training gate blurs the border over a cell
    assert torch.equal(sharp[:, :SIZE // 2 - 4], logits[:, :SIZE // 2 - 4])  # inside, the same as in training
    decoder.train()
    with torch.no_grad():
        decoder.concept_pick[-1].bias.copy_(torch.tensor([-30.0, -30.0, -30.0, -30.0, 30.0]))  # names none: open
        assert (decoder(hidden, torch.randn(config.mask_decoder_dim, low, low), parse, hidden) > 0).all()
        decoder.concept_pick[-1].bias.copy_(torch.tensor([-30.0, -30.0, 30.0, 30.0, -30.0]))  # a parent: the union
        assert (decoder(hidden, torch.randn(config.mask_decoder_dim, low, low), parse, hidden) > 0).all()
    with pytest.raises(ValueError, match="parsing logits"):
        decoder(hidden, torch.randn(config.mask_decoder_dim, low, low))


def test_pick_loss_sums_named_classes_and_ignores_them_when_open() -> None:
    from fifa_lab.model.mask_decoder import pick_loss

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [0.3, 0.2, -0.4, 1.5]])
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # names classes 0 and 2; names none
    named = bce(logits[0], targets[0], reduction="sum")
    opened = bce(logits[1, -1], targets[1, -1])
    assert torch.isclose(pick_loss(logits, targets), (named + opened) / 2)
    # a perfect pick costs (almost) nothing
    assert pick_loss(torch.where(targets > 0, 20.0, -20.0), targets) < 1e-6


def test_concept_loss_is_the_gate_pick_loss_and_part_of_the_loss(model: FiFaMLLM, batch: dict) -> None:
    from fifa_lab.model.mask_decoder import pick_loss

    classes = model.config.parsing_classes
    wanted = [torch.zeros(1, classes + 1), torch.zeros(1, classes + 1)]
    wanted[0][0, [3, 4]] = 1.0
    wanted[1][0, classes] = 1.0  # names no concept
    out = model(**batch, seg_concepts=wanted)
    run = model._run(batch["images"], batch["input_ids"], batch["attention_mask"], regions=batch["regions"],
                     output_hidden_states=True)
    picks = torch.cat([model.mask_decoder.concept_pick(p) for p in model._seg_phrases(run)])
    assert out["concept"] > 0 and torch.isclose(out["concept"], pick_loss(picks, torch.cat(wanted)), atol=1e-6)
    c = model.config
    assert torch.isclose(out["loss"], c.ce_weight * out["ce"] + c.bce_weight * out["bce"] + c.dice_weight * out["dice"]
                         + c.concept_weight * out["concept"])
    with pytest.raises(ValueError, match="seg_concepts"):
        model(**batch, seg_concepts=[torch.zeros(2, classes), wanted[1]])


def test_ground_gives_one_mask_per_seg(model: FiFaMLLM) -> None:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    answer = "<p>the left eye</p> [SEG] and <p>the mouth</p> [SEG] are blended."
    response = model.ground(image, PROMPTS[0], answer)
    assert isinstance(response, Response)
    assert response.text.count(SEG_TOKEN) == 2 == len(response.masks)
    assert response.phrases == ["the left eye", "the mouth"] == parse_phrases(answer)
    assert response.masks.shape == (2, SIZE, SIZE) and response.masks.dtype == bool
    generated = model.generate(image, PROMPTS[0], max_new_tokens=8)
    assert generated.text.count(SEG_TOKEN) == len(generated.masks)
    assert IMAGE_TOKEN not in generated.text and REGION_TOKEN not in generated.text


@pytest.mark.parametrize("condition", [False, True])
def test_cached_greedy_decoding_matches_decoding_without_a_cache(model: FiFaMLLM, batch: dict, condition: bool) -> None:
    if condition:  # a forensic condition that is no longer zero must reach the cached steps too
        model = copy.deepcopy(model)
        torch.nn.init.constant_(model.forgery_head.condition_gate, 1.0)
    image = (batch["images"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")  # the KV cache under its current name
        generated = model.generate(image, PROMPTS[0], max_new_tokens=12)
    images = model._image_tensor(image)
    ids = model.encode([PROMPTS[0]])["input_ids"][0].tolist()
    banned = [model.token_ids[t] for t in (IMAGE_TOKEN, REGION_TOKEN, model.config.pad_token, model.config.bos_token)]
    answer: list[int] = []
    with torch.no_grad():
        for _ in range(12):
            tokens = torch.tensor([ids + answer])
            logits = model._run(images, tokens, torch.ones_like(tokens)).output.logits[0, -1]
            logits[banned] = float("-inf")
            token = int(logits.argmax())
            if token == model.token_ids[model.config.eos_token]:
                break
            answer.append(token)
    assert model.ground(image, PROMPTS[0], answer).text == generated.text


def test_batched_generation_answers_as_one_at_a_time(model: FiFaMLLM) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(4)]
    mask = np.zeros((SIZE, SIZE), bool)
    mask[8:24, 16:40] = True
    # prompts of three lengths, so rows are left-padded by different amounts; regions on two rows only
    prompts = [PROMPTS[0], PROMPTS[1], "<image> Is this face real or fake?", PROMPTS[1]]
    regions = [None, mask, None, (30, 30, 60, 50)]
    batched = model.generate_batch(images, prompts, regions, max_new_tokens=10)
    for image, prompt, region, answer in zip(images, prompts, regions, batched):
        alone = model.generate(image, prompt, region=region, max_new_tokens=10)
        assert answer.text == alone.text and answer.phrases == alone.phrases
        assert np.array_equal(answer.masks, alone.masks)
    assert model.generate_batch([], []) == []
    with pytest.raises(ValueError, match="one of each per answer"):
        model.generate_batch(images[:2], prompts[:1])


def test_overfit_two_samples_lowers_loss(batch: dict) -> None:
    torch.manual_seed(0)
    model = build_tiny(CORPUS, tokenizer_vocab_size=400, **TINY).train()
    encoded = model.encode(PROMPTS, TARGETS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, mask_losses = [], []
    for _ in range(50):
        out = model(**{**batch, **encoded})
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
        mask_losses.append(out["bce"].item() + out["dice"].item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert mask_losses[-1] < mask_losses[0], mask_losses
    model.eval()
    image = (batch["images"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    response = model.generate(image, PROMPTS[0], max_new_tokens=24)
    # 50 steps need not reproduce the target exactly, but masks always follow the [SEG] tokens
    assert response.text.count(SEG_TOKEN) == len(response.masks)
    # the trained rows end with </s> after different numbers of tokens: batched, each row stops on its own.
    # Decoded freely: 50 steps may leave a repeated phrase, which the phrase constraint would turn into a
    # longer other one, and stopping is what is tested here
    images = [(im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for im in batch["images"]]
    regions = [None, batch["regions"][1].numpy().astype(bool)]
    answers = model.generate_batch(images, PROMPTS, regions, max_new_tokens=24, constrain_phrases=False)
    alone = [model.generate(im, prompt, region=region, max_new_tokens=24, constrain_phrases=False)
             for im, prompt, region in zip(images, PROMPTS, regions)]
    assert [a.text for a in answers] == [a.text for a in alone]
    lengths = [len(model._tokenize(a.text)) for a in alone]
    assert max(lengths) < 24 and lengths[0] != lengths[1], lengths


def test_phrase_constraint_continues_unused_phrases_only() -> None:
    from fifa_lab.model.fifa_mllm import PhraseConstraint

    start, end = 10, 11
    constraint = PhraseConstraint([[1, 2, 3], [1, 2, 4], [5]], start, end)
    assert constraint.allowed([7, 8]) is None  # outside a phrase: anything
    assert constraint.allowed([7, start]) == [1, 5]
    assert constraint.allowed([start, 1, 2]) == [3, 4]
    assert constraint.allowed([start, 1, 2, 3]) == [end]
    # "1 2 3" is used: a second phrase starting "1 2" can only become "1 2 4"
    assert constraint.allowed([start, 1, 2, 3, end, 9, start, 1, 2]) == [4]
    assert constraint.allowed([start, 5, end, start]) == [1]
    used_up = [start, 1, 2, 3, end, start, 1, 2, 4, end, start, 5, end, start]
    assert constraint.allowed(used_up) == [end]
    with pytest.raises(ValueError, match="at least one phrase"):
        PhraseConstraint([[1], []], start, end)


def test_generated_phrases_come_from_the_vocabulary_once_each(model: FiFaMLLM) -> None:
    from fifa_lab.tasks.fifa11 import LOC_PHRASE, grounding_phrases

    # an LM that wants <p> everywhere: free decoding opens phrase after phrase and never names one
    eager = copy.deepcopy(model)
    head = eager.lm.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[eager.token_ids["<p>"]] = 100.0
    eager.lm.lm_head = biased
    image = np.full((SIZE, SIZE, 3), 90, np.uint8)
    free = eager.generate(image, PROMPTS[0], max_new_tokens=12, constrain_phrases=False)
    assert free.text.count("<p>") == 12 and not free.phrases
    vocabulary = ["the left eye", "the mouth"]
    constrained = eager.generate(image, PROMPTS[0], max_new_tokens=16, phrases=vocabulary)
    named = [phrase for phrase in constrained.phrases if phrase]
    assert sorted(named) == sorted(vocabulary)  # both, once each, then nothing left to name
    # the default vocabulary: every FICT concept as the annotator names it, and Loc's phrase
    default = grounding_phrases()
    assert "the left chin" in default and LOC_PHRASE in default and len(set(default)) == len(default)


def test_save_load_round_trip(model: FiFaMLLM, batch: dict, tmp_path) -> None:
    model.save_pretrained(tmp_path / "ckpt")
    loaded = FiFaMLLM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(model(**batch)["logits"], loaded(**batch)["logits"])
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (tmp_path / "ckpt" / "model.safetensors").unlink()
        FiFaMLLM.from_pretrained(tmp_path / "ckpt")
    assert FiFaConfig.from_dict(model.config.to_dict()) == model.config


def test_region_by_mask_and_by_box(model: FiFaMLLM) -> None:
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[8:24, 16:40] = True
    by_mask = model.ground(image, PROMPTS[1], TARGETS[1], region=mask)
    by_box = model.ground(image, PROMPTS[1], TARGETS[1], region=(16, 8, 40, 24))
    assert np.array_equal(by_mask.masks, by_box.masks) and len(by_box.masks) == 1
    assert torch.equal(boxes_to_masks([[16, 8, 40, 24]], (SIZE, SIZE))[0].bool(), torch.from_numpy(mask))
    grid = torch.randn(2, model.config.vision_hidden_size, 4, 4)
    assert model.region_encoder(grid, boxes_to_masks([[0, 0, 8, 8], [30, 30, 64, 64]], (SIZE, SIZE))).shape == (
        2, model.config.lm_hidden_size)
    with pytest.raises(ValueError, match="empty"):
        model.region_encoder(grid, torch.zeros(2, SIZE, SIZE))


def test_choice_probs_with_the_head_multiply_the_lm_by_the_forgery_head(model: FiFaMLLM) -> None:
    image = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    prompt = "<image> Is this face real or fake?"
    with torch.no_grad():  # the head reads the image alone: any prompt gives the same head output
        run = model._run(model._image_tensor(image), *model.encode(["<image>"]).values())
    fake = float(torch.sigmoid(run.fake_logits[0]))
    classes = run.class_logits[0].softmax(0).numpy()
    # real/fake: the LM's two probabilities times the head's detection probability, renormalised
    lm = model.choice_probs(image, prompt, ["fake", "real"])
    expected = lm * np.array([fake, 1 - fake])
    np.testing.assert_allclose(model.choice_probs(image, prompt, ["fake", "real"], head=True),
                               expected / expected.sum(), rtol=1e-4)
    # forgery classes: its class probabilities, over the choices asked for only
    asked = ["FE", "real", "EFS"]
    lm = model.choice_probs(image, prompt, asked)
    expected = lm * classes[[FORGERY_CLASSES.index(c) for c in asked]]
    np.testing.assert_allclose(model.choice_probs(image, prompt, asked, head=True), expected / expected.sum(),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="not \\['no', 'yes'\\]"):
        model.choice_probs(image, prompt, ["no", "yes"], head=True)
    with pytest.raises(ValueError, match="whole image"):
        model.choice_probs(image, PROMPTS[1], ["real", "fake"], region=(16, 8, 40, 24), head=True)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(image=np.zeros((32, 32, 3), np.uint8)), r"\(64, 64, 3\) uint8"),
    (dict(image=np.zeros((SIZE, SIZE, 3), np.float32)), "uint8"),
    (dict(prompt="What is this?"), "must contain <image>"),
    (dict(prompt=PROMPTS[1]), "exactly when the prompt contains <region>"),
    (dict(prompt=PROMPTS[1], region=np.ones((32, 32), bool)), r"must be \(64, 64\)"),
    (dict(prompt=PROMPTS[1], region=(10, 10, 80, 30)), "outside"),
    (dict(prompt=PROMPTS[1], region=np.zeros((SIZE, SIZE), bool)), "empty"),
    (dict(region=np.ones((SIZE, SIZE), bool)), "exactly when"),
])
def test_bad_inputs_raise(model: FiFaMLLM, kwargs: dict, message: str) -> None:
    args = dict(image=np.zeros((SIZE, SIZE, 3), np.uint8), prompt=PROMPTS[0], max_new_tokens=2) | kwargs
    with pytest.raises(ValueError, match=message):
        model.generate(**args)


def test_bad_training_inputs_raise(model: FiFaMLLM, batch: dict) -> None:
    with pytest.raises(ValueError, match=r"images must be \(B, 3, 64, 64\)"):
        model(**{**batch, "images": torch.rand(2, 3, 32, 32)})
    with pytest.raises(ValueError, match=r"\[SEG\] tokens, so seg_masks\[0\]"):
        model(**{**batch, "seg_masks": [torch.zeros(2, SIZE, SIZE), batch["seg_masks"][1]]})
    with pytest.raises(ValueError, match="no regions were given"):
        model(**{**batch, "regions": None})
    with pytest.raises(ValueError, match="exactly one <image>"):
        model.encode(["no image here"])
    with pytest.raises(ValueError, match="image_size"):
        FiFaConfig(image_size=60)


def test_tokenizer_keeps_special_tokens_whole(tmp_path) -> None:
    config = FiFaConfig()
    tokenizer = train_tokenizer(CORPUS, 300, config)
    text = "<image>x<region> <p>eye</p>[SEG]"
    pieces = tokenizer.tokenize(text)
    for token in config.special_tokens:
        assert pieces.count(token) == 1, pieces
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    tokenizer.save_pretrained(str(tmp_path))
    reloaded = type(tokenizer).from_pretrained(str(tmp_path))
    assert reloaded.encode(text) == tokenizer.encode(text)
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    built = build_tiny(CORPUS, config=dataclasses.replace(config, **TINY), tokenizer_vocab_size=300)
    assert built.config.vocab_size == len(built.tokenizer)


def test_conv_stem_and_token_pooling_shapes() -> None:
    from fifa_lab.model.image_encoder import ConvPatchEmbeddings, ImageEncoder

    config = FiFaConfig(image_size=64, patch_size=16, vision_hidden_size=32, vision_layers=1, vision_heads=2)
    encoder = ImageEncoder(config)
    assert isinstance(encoder.vit.embeddings.patch_embeddings, ConvPatchEmbeddings)
    tokens, grid = encoder(torch.rand(3, 3, 64, 64))
    assert tokens.shape == (3, 16, 32) and grid.shape == (3, 32, 4, 4)
    # the 4x4 grid pooled 2x2 for the LM, plus the global, the forensic and the concept token
    assert config.num_image_tokens == 7
    assert dataclasses.replace(config, forensic_token=False, concept_token=False).num_image_tokens == 5
    with pytest.raises(ValueError, match="power-of-two"):
        ImageEncoder(FiFaConfig(image_size=56, patch_size=14, vision_hidden_size=32, vision_heads=2))
    with pytest.raises(ValueError, match="image_token_pool"):
        FiFaConfig(image_size=48, patch_size=16, image_token_pool=2)
    # patch-14 towers (CLIP-L/14, SigLIP) are accepted by the config: only the conv stem needs powers of two
    assert FiFaConfig(image_size=224, patch_size=14, vision_stem="patch").grid_size == 16


def test_seg_phrases_are_the_mean_embedding_of_the_phrase_before_each_seg(model: FiFaMLLM) -> None:
    answer = "<p>the left eye</p> [SEG] then a bare [SEG] and <p>the mouth</p> <p>nose</p> [SEG]"
    encoded = model.encode([PROMPTS[0]], [answer])
    run = model._run(torch.rand(1, 3, SIZE, SIZE), encoded["input_ids"], encoded["attention_mask"])
    phrases = model._seg_phrases(run)[0]
    assert phrases.shape == (3, model.config.lm_hidden_size)
    table = model.lm.get_input_embeddings().weight
    ids = encoded["input_ids"][0].tolist()
    starts = [i for i, t in enumerate(ids) if t == model.token_ids["<p>"]]
    ends = [i for i, t in enumerate(ids) if t == model.token_ids["</p>"]]
    assert model.tokenizer.decode(ids[starts[0] + 1:ends[0]]).strip() == "the left eye"
    expected = [table[ids[starts[0] + 1:ends[0]]].mean(0), torch.zeros(table.shape[1]),
                table[ids[starts[2] + 1:ends[2]]].mean(0)]  # the last phrase before a [SEG] names it
    for got, want in zip(phrases, expected):
        assert torch.allclose(got, want, atol=1e-6)
    # RSeg: the phrase is in the prompt and the answer only places the [SEG]
    encoded = model.encode(["<image>\nSegment the <p>left eye</p>."], [RSEG_ANSWER])
    run = model._run(torch.rand(1, 3, SIZE, SIZE), encoded["input_ids"], encoded["attention_mask"])
    ids = run.input_ids[0].tolist()
    inside = slice(ids.index(model.token_ids["<p>"]) + 1, ids.index(model.token_ids["</p>"]))
    assert model.tokenizer.decode(ids[inside]).strip() == "left eye"
    assert torch.allclose(model._seg_phrases(run)[0], run.embeds[0, inside].mean(0, keepdim=True), atol=1e-6)
