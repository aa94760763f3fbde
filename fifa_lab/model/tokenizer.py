"""The tiny build's tokenizer: byte-level BPE trained on the instruction corpus with ``tokenizers``.

Byte-level BPE never needs an unknown token and decodes back to the exact text. The FiFa special tokens
(``<image>``, ``<region>``, ``<p>``, ``</p>``, ``[SEG]``) are registered as additional special tokens, so
each is one id that BPE never splits and ``<image>``/``<region>``/``[SEG]`` can be found by id.
"""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from fifa_lab.model.config import FiFaConfig


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024,
                    config: FiFaConfig | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``; ``len(tokenizer) <= vocab_size`` ids.

    Special tokens come from ``config`` (default :class:`FiFaConfig`): pad, bos, eos and the FiFa tokens.
    Save with ``tokenizer.save_pretrained(dir)``, load with ``PreTrainedTokenizerFast.from_pretrained(dir)``.
    """
    config = config or FiFaConfig()
    texts = list(texts)
    if not texts:
        raise ValueError("train_tokenizer needs at least one text")
    specials = [config.pad_token, config.bos_token, config.eos_token, *config.special_tokens]
    # 256 byte symbols + the special tokens must fit, or BPE has nothing to merge
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be at least {256 + len(specials)}, got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=config.pad_token, bos_token=config.bos_token,
        eos_token=config.eos_token, additional_special_tokens=list(config.special_tokens),
        model_max_length=config.max_length)
