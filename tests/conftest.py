"""Shared fixtures: tiny stand-ins for pretrained Hugging Face checkpoints, saved offline to a temporary folder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, ViTConfig, ViTModel

HF_SIZE = 64
# a FiFa-MLLM small enough for CPU tests at HF_SIZE pixels (FiFaConfig overrides)
TINY_CONFIG = dict(image_size=HF_SIZE, patch_size=16, vision_hidden_size=32, vision_layers=1, vision_heads=2,
                   lm_hidden_size=32, lm_layers=1, lm_heads=2, lm_intermediate_size=64, mask_decoder_dim=8,
                   pixel_stem_channels=8, max_length=1024)
SENTENCES = ["the face is fake", "the left eye is blurred", "the mouth looks natural", "where is this face edited",
             "explain what is odd about the nose", "it is real"]


@pytest.fixture(scope="session")
def hf_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Save a tiny ViT and a tiny Llama (with an offline WordLevel tokenizer) as local HF folders."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=HF_SIZE, patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(root / "vit")
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(root / "llama")
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2, vocab_size=len(tokenizer), pad_token_id=1, bos_token_id=2,
                                 eos_token_id=3)).save_pretrained(root / "llama")
    return root / "vit", root / "llama"
