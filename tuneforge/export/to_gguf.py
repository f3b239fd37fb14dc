"""Write a merged Llama-family model as a GGUF file for llama.cpp-family runtimes.

Follows llama.cpp's own converter (convert_hf_to_gguf.py) for the ``llama`` architecture: tensor names
(``blk.N.attn_q`` ...), the rotary permutation of the Q and K projections, the hyper-parameters under
``llama.*`` and a byte-level BPE (``gpt2``) tokenizer with its merges, special ids and chat template.
Norms stay float32; matrices are f32, f16 or q8_0 (8-bit blocks of 32 with one f16 scale).

The file is checked by loading it back with transformers' independent GGUF reader (which undoes the
permutation and dequantises) and comparing logits and tokenization with the merged folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge import atomic
from tuneforge.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BLOCK_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def permute_qk(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's rotary layout for Q/K rows (interleaved halves per head), as in its converter."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def gguf_name(hf_name: str) -> str | None:
    """GGUF tensor name for a Hugging Face Llama parameter (None: not stored)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        layer, rest = parts[2], ".".join(parts[3:])
        stem, _, kind = rest.rpartition(".")
        if stem in BLOCK_NAMES:
            return f"blk.{layer}.{BLOCK_NAMES[stem]}.{kind}"
    return None


def source_pre_tokenizer(model_folder: Path) -> str | None:
    """``tokenizer.ggml.pre`` of the GGUF this folder was converted from (tuneforge's cache records it)."""
    import gguf

    source = model_folder / "SOURCE"
    if not source.is_file():
        return None
    path = Path(source.read_text().splitlines()[0])
    if not path.is_file():
        return None
    field = gguf.GGUFReader(str(path)).fields.get("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else None


def _tokenizer_fields(writer, tokenizer: PreTrainedTokenizerBase, pre: str) -> None:
    import gguf

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    if data.get("model", {}).get("type") != "BPE":
        raise UserError("GGUF export supports byte-level BPE tokenizers (gpt2 style) only")
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    added = {t["content"]: t for t in data.get("added_tokens", [])}
    for content, tok in added.items():
        vocab[content] = tok["id"]
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for text, idx in vocab.items():
        tokens[idx] = text
        if text in added:
            types[idx] = gguf.TokenType.CONTROL if added[text].get("special") else gguf.TokenType.USER_DEFINED
        else:
            types[idx] = gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token in (
        (writer.add_bos_token_id, tokenizer.bos_token), (writer.add_eos_token_id, tokenizer.eos_token),
        (writer.add_unk_token_id, tokenizer.unk_token), (writer.add_pad_token_id, tokenizer.pad_token),
    ):
        if token is not None and token in vocab:
            setter(vocab[token])
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    writer.add_add_bos_token(bool(tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path, qtype: str = "f16",
    pre: str | None = None, name: str = "tuneforge-merged",
) -> dict:
    """Write ``model`` (a merged Llama-family model) to ``out``; returns the file's description."""
    import gguf
    import numpy as np

    cfg = model.config
    if cfg.model_type != "llama":
        raise UserError(f"GGUF export supports Llama-family models (SmolLM2, Llama); this is {cfg.model_type!r}")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise UserError("GGUF export does not support Llama models with attention/MLP biases")
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"GGUF export supports default RoPE only (this model uses {rope.get('rope_type')!r})")
    theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    file_types = {"f32": (gguf.LlamaFileType.ALL_F32, None), "f16": (gguf.LlamaFileType.MOSTLY_F16, np.float16),
                  "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0)}
    file_type, matrix_type = file_types[qtype]

    count = 0
    with atomic.replace_file(out) as tmp:  # a failed write leaves the previous file, never a truncated one
        writer = gguf.GGUFWriter(str(tmp), "llama")
        writer.add_name(name)
        writer.add_context_length(cfg.max_position_embeddings)
        writer.add_embedding_length(cfg.hidden_size)
        writer.add_block_count(cfg.num_hidden_layers)
        writer.add_feed_forward_length(cfg.intermediate_size)
        writer.add_head_count(cfg.num_attention_heads)
        writer.add_head_count_kv(cfg.num_key_value_heads)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(theta)
        writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_file_type(file_type)
        _tokenizer_fields(writer, tokenizer, pre or "default")

        tied = bool(getattr(cfg, "tie_word_embeddings", False))
        for hf_name, tensor in model.state_dict().items():
            if tied and hf_name == "lm_head.weight":
                continue  # llama.cpp reuses token_embd when output.weight is absent
            target = gguf_name(hf_name)
            if target is None:
                raise UserError(f"GGUF export: no GGUF name for parameter {hf_name!r}")
            data = tensor.detach().float().cpu().numpy()
            if hf_name.endswith("q_proj.weight"):
                data = permute_qk(data, cfg.num_attention_heads, cfg.num_attention_heads)
            elif hf_name.endswith("k_proj.weight"):
                data = permute_qk(data, cfg.num_attention_heads, cfg.num_key_value_heads)
            if data.ndim == 1 or matrix_type is None:
                writer.add_tensor(target, np.ascontiguousarray(data, dtype=np.float32))
            elif matrix_type is np.float16:
                writer.add_tensor(target, np.ascontiguousarray(data, dtype=np.float16))
            else:
                writer.add_tensor(target, gguf.quants.quantize(data, matrix_type), raw_dtype=matrix_type)
            count += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return {"path": str(out), "type": qtype, "tensors": count, "pre_tokenizer": pre or "default"}


def check_gguf(path: Path, reference_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict:
    """Load the GGUF back with transformers and compare logits and tokenization with the merged model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export.merge import check_inputs, compare_logits, logits_of

    reloaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    reloaded.eval()
    inputs = check_inputs(tokenizer)
    report = compare_logits(logits_of(reference_model, inputs), logits_of(reloaded, inputs))
    gguf_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    from tuneforge.export.merge import CHECK_PROMPTS

    same = [gguf_tok(p)["input_ids"] == tokenizer(p)["input_ids"] for p in CHECK_PROMPTS]
    report["tokenization_agreement"] = sum(same) / len(same)
    return report
