"""Pretrained build: local HF vision tower + causal LM + LoRA, training scope, merge/export, path errors.

Tiny stand-ins for the real checkpoints come from the ``hf_paths`` fixture (``conftest.py``).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from fifa_lab.model import FiFaConfig, FiFaMLLM
from fifa_lab.model.pretrained import LoraSettings, build_pretrained, merge_lora, trainable_parameters
from conftest import HF_SIZE as SIZE

PROMPTS = ["<image> Where is this face manipulated?", "<image> Explain what is odd about <region>."]
TARGETS = ["The face is fake: <p>the left eye</p> [SEG] is blurred.", "It is real; <p>the mouth</p> [SEG] looks natural."]


def _square(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE)
    mask[y0:y1, x0:x1] = 1
    return mask


def _batch(model: FiFaMLLM) -> dict:
    torch.manual_seed(1)
    return dict(images=torch.rand(2, 3, SIZE, SIZE), regions=torch.stack([torch.zeros(SIZE, SIZE),
                                                                           _square(40, 60, 20, 44)]),
                seg_masks=[_square(10, 30, 8, 28)[None], _square(44, 56, 20, 44)[None]],
                **model.encode(PROMPTS, TARGETS))


def _build(hf_paths: tuple[Path, Path]) -> FiFaMLLM:
    torch.manual_seed(2)
    # a small mask decoder and parsing layer keep the heads in proportion to the 32-wide stand-in models
    return build_pretrained(*hf_paths, config=FiFaConfig(mask_decoder_dim=16, parsing_hidden=16, max_length=64))


def test_builds_from_paths_and_forward_is_finite(hf_paths: tuple[Path, Path]) -> None:
    model = _build(hf_paths)
    assert isinstance(model.lm, PeftModel)
    c = model.config
    assert (c.image_size, c.patch_size, c.vision_hidden_size, c.lm_hidden_size) == (SIZE, 16, 32, 32)
    assert c.vocab_size == len(model.tokenizer) == model.lm.get_input_embeddings().weight.shape[0]
    for token in c.special_tokens:  # each FiFa token is one new id
        assert len(model.tokenizer.encode(token, add_special_tokens=False)) == 1
    out = model(**_batch(model))
    assert out["logits"].shape[-1] == c.vocab_size
    for key in ("loss", "ce", "bce", "dice"):
        assert torch.isfinite(out[key]) and out[key] > 0


def test_only_lora_new_rows_and_heads_train(hf_paths: tuple[Path, Path]) -> None:
    model = _build(hf_paths)
    trainable, total = trainable_parameters(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any(n.startswith("image_encoder.") for n in names)
    # LoRA on q_proj and v_proj of one layer: A (r x 32) + B (32 x r) each
    lora = 2 * (8 * 32 + 32 * 8)
    new_rows = 5 * 32 * 2  # 5 FiFa tokens, rows of the (untied) input embedding and LM head
    heads = sum(p.numel() for part in (model.projector, model.region_encoder, model.mask_decoder,
                                       model.forgery_head, model.parsing_head) for p in part.parameters())
    assert trainable == lora + new_rows + heads
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n) == lora
    lm_total = sum(p.numel() for p in model.lm.parameters())
    assert lora + new_rows < 0.15 * lm_total  # even at width 32 the LM itself barely trains
    # at width 32 the heads (the concept pick is 33 x 114, the concept token 226 x 32, the parsing layers
    # 16 x 16 x 9 and 16 x 113) weigh as much as the LM; real LMs dwarf them. The parsing head's position
    # map (113 logits per 1/4-resolution cell) grows with the image, not the LM, so it is counted apart
    position = model.parsing_head.prior.numel()
    assert position == model.config.parsing_classes * (model.config.image_size // 4) ** 2
    assert trainable - position < 0.45 * total


def test_training_moves_lora_not_the_vision_tower(hf_paths: tuple[Path, Path]) -> None:
    model = _build(hf_paths).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(model)
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch)["loss"].backward()
        optimizer.step()
    after = dict(model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert any("lora_B" in n for n in changed)
    assert not any(n.startswith("image_encoder.") for n in changed)
    assert not any(n.startswith("lm.") and "lora_" not in n and "token_adapter" not in n for n in changed)


def test_merge_lora_then_save_load_round_trip(hf_paths: tuple[Path, Path], tmp_path: Path) -> None:
    model = _build(hf_paths)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(model)
    for _ in range(2):  # non-zero LoRA B, so merging actually changes weights
        optimizer.zero_grad()
        model(**batch)["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        expected = model(**batch)["logits"]
        merged = merge_lora(model)
        assert not isinstance(merged.lm, PeftModel)
        torch.testing.assert_close(merged(**batch)["logits"], expected, rtol=1e-4, atol=1e-4)
    merged.save_pretrained(tmp_path / "export")
    loaded = FiFaMLLM.from_pretrained(tmp_path / "export")
    with torch.no_grad():
        assert torch.equal(loaded(**batch)["logits"], merged(**batch)["logits"])
    assert loaded.tokenizer.get_vocab() == merged.tokenizer.get_vocab()


def test_unmerged_checkpoint_round_trips(hf_paths: tuple[Path, Path], tmp_path: Path) -> None:
    model = _build(hf_paths).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = FiFaMLLM.from_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded.lm, PeftModel)
    batch = _batch(model)
    with torch.no_grad():
        assert torch.equal(loaded(**batch)["logits"], model(**batch)["logits"])


def test_lora_settings_are_used(hf_paths: tuple[Path, Path]) -> None:
    model = build_pretrained(*hf_paths, lora=LoraSettings(rank=4, alpha=8, dropout=0.0, targets=("q_proj",)))
    lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    assert lora == 4 * 32 + 32 * 4
    full = build_pretrained(*hf_paths, lora=None)  # no adapters: the whole LM trains
    assert all(p.requires_grad for p in full.lm.parameters())


def test_missing_or_wrong_paths_fail_clearly(hf_paths: tuple[Path, Path], tmp_path: Path) -> None:
    vit, llama = hf_paths
    with pytest.raises(FileNotFoundError, match=r"nowhere.*vision model"):
        build_pretrained(tmp_path / "nowhere", llama)
    with pytest.raises(FileNotFoundError, match=r"nowhere.*causal LM"):
        build_pretrained(vit, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty has no config.json"):
        build_pretrained(tmp_path / "empty", llama)
    with pytest.raises(ValueError, match=r"llama.*not a ViT-style vision model"):
        build_pretrained(llama, llama)
    with pytest.raises(ValueError, match=r"cannot load a causal LM from .*vit"):
        build_pretrained(vit, vit)
