from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tuneforge.errors import UserError
from tuneforge.models import load_model, load_tokenizer, resolve_model
from tuneforge.models.cache import verify_checksums


def _tinycoder_gguf() -> Path:
    spec = importlib.util.find_spec("tinycoder")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "tiny.gguf"


def test_local_folder_loads_with_same_logits(tiny_model_dir, tiny_model, tokenizer):
    loaded = load_model(str(tiny_model_dir), device="cpu")
    ids = tokenizer("hello world", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(loaded(**ids).logits, tiny_model(**ids).logits, atol=1e-6)
    assert not loaded.training


def test_gguf_is_converted_once_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    gguf = _tinycoder_gguf()
    folder = resolve_model(str(gguf))
    assert (folder / "model.safetensors").is_file() and (folder / "checksums.json").is_file()
    config = (folder / "config.json").read_text()
    assert "quantization_config" not in config
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert resolve_model(str(gguf)) == folder  # second call reuses the cache
    assert (folder / "model.safetensors").stat().st_mtime == mtime
    model = load_model(str(gguf), device="cpu")
    assert model.config.model_type == "llama"


def test_corrupted_cache_is_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    folder = resolve_model(str(_tinycoder_gguf()))
    with open(folder / "model.safetensors", "r+b") as f:
        f.seek(-16, 2)
        f.write(b"\x00" * 16)
    with pytest.raises(UserError, match="checksum mismatch"):
        resolve_model(str(_tinycoder_gguf()))


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UserError, match="not found: give a bundled name"):
        resolve_model("meta-llama/Llama-3-8B")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_bundled_tokenizer_has_chat_template(tokenizer):
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.pad_token is not None


def test_adapter_folder_must_be_peft(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="not a PEFT adapter folder"):
        load_model(str(tiny_model_dir), adapter=str(tmp_path), device="cpu")


def test_tokenizer_from_local_folder(tiny_model_dir, tokenizer):
    tok = load_tokenizer(str(tiny_model_dir))
    assert tok("abc")["input_ids"] == tokenizer("abc")["input_ids"]


@pytest.mark.slow
def test_bundled_model_answers_offline():
    from tuneforge.models.generate import stream_chat

    model = load_model("smollm2-135m-instruct", device="cpu")
    tok = load_tokenizer("smollm2-135m-instruct")
    answer = "".join(
        stream_chat(model, tok, [{"role": "user", "content": "Why is the sky blue?"}], max_new_tokens=60)
    )
    assert "scatter" in answer.lower()  # the real model explains Rayleigh scattering


def test_converted_gguf_files_reach_the_disk_before_the_folder_appears(tmp_path, monkeypatch):
    from tests.faults import fsynced

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    with fsynced(monkeypatch) as names:
        folder = resolve_model(str(_tinycoder_gguf()))
    written = {p.name for p in folder.iterdir()} - {".verified.json"}  # the stamp is written after the swap
    assert written and written <= set(names)


def test_half_precision_load_saves_the_cast_weights_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    gguf = str(_tinycoder_gguf())
    folder = resolve_model(gguf)
    reference = load_model(gguf, device="cpu", dtype="float32")
    model = load_model(gguf, device="cpu", dtype="bfloat16")
    half = folder / "bfloat16"
    assert (half / "checksums.json").is_file()
    # the file holds bfloat16 tensors (half the float32 file), so nothing float32 is mapped at load
    assert (half / "model.safetensors").stat().st_size < 0.6 * (folder / "model.safetensors").stat().st_size
    for (name, p), (_, ref) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        assert p.dtype == torch.bfloat16, name
        assert torch.equal(p, ref.to(torch.bfloat16)), name  # the same cast from_pretrained makes
    mtime = (half / "model.safetensors").stat().st_mtime_ns
    load_model(gguf, device="cpu", dtype="bfloat16")
    assert (half / "model.safetensors").stat().st_mtime_ns == mtime  # saved once
    verify_checksums(folder)  # the parent's own files are untouched


def test_half_precision_load_from_a_read_only_cache_falls_back(tmp_path, monkeypatch):
    import tuneforge.models.load as load

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    gguf = str(_tinycoder_gguf())
    folder = resolve_model(gguf)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(load, "_cast_into", refuse)
    model = load_model(gguf, device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert not (folder / "bfloat16").exists()
