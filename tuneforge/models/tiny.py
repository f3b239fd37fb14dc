"""A tiny randomly initialised model with the real tokenizer, for fast tests and examples.

Same architecture family (Llama) and tokenizer as the bundled SmolLM2, only a few small layers, so
every code path runs in seconds on a CPU. Its outputs are noise: never use it for results.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def tiny_config(vocab_size: int, **overrides: int):
    from transformers import LlamaConfig

    args = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    args.update(overrides)
    return LlamaConfig(**args)


def tiny_model(tokenizer: PreTrainedTokenizerBase, seed: int = 0, **overrides: int) -> PreTrainedModel:
    """A randomly initialised tiny Llama whose vocabulary matches ``tokenizer``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(len(tokenizer), **overrides)
    cfg.bos_token_id = tokenizer.bos_token_id
    cfg.eos_token_id = tokenizer.eos_token_id
    cfg.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(cfg)
    return model.eval()


def save_tiny_model(folder: str | Path, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> Path:
    """Write a tiny model and the tokenizer as a standard folder that ``--model`` accepts."""
    folder = Path(folder)
    model = tiny_model(tokenizer, seed=seed)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
