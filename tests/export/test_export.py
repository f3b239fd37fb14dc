"""`tuneforge export`: the merged folder loads with plain transformers and behaves like base+adapter."""

from __future__ import annotations

import json

import pytest
import torch

from tests.export.helpers import make_lora_run
from tuneforge.cli.main import main
from tuneforge.export.merge import check_inputs, compare_logits, logits_of
from tuneforge.export.pipeline import size_table


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    run = make_lora_run(tmp_path_factory.mktemp("runs") / "lora", tiny_model_dir)
    assert main(["export", str(run), "--int8"]) == 0
    return run


def _peft_reference(run, model_dir, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    return logits_of(model, check_inputs(tokenizer))


def test_merged_folder_loads_with_automodel_and_matches_adapter(exported, tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(exported / "export" / "merged")).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    inputs = check_inputs(tokenizer)
    reference = _peft_reference(exported, tiny_model_dir, tokenizer)
    assert compare_logits(reference, logits_of(merged, inputs))["max_rel_diff"] < 1e-4
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    # The adapter really changed the model (otherwise the check above proves nothing).
    assert compare_logits(reference, logits_of(base, inputs))["max_abs_diff"] > 1e-2


def test_report_has_checks_and_size_table(exported, capsys):
    report = json.loads((exported / "export" / "export.json").read_text())
    assert report["merge_check"]["passed"]
    sizes = report["sizes_bytes"]
    assert sizes["adapter"] < sizes["merged"]
    assert sizes["merged-int8"] < sizes["merged"]
    assert "base" in size_table(sizes) and "merged-int8" in size_table(sizes)


def test_int8_copy_is_smaller_and_close(exported, tokenizer):
    from transformers import AutoModelForCausalLM

    from tuneforge.export.quantize import load_int8_model

    q = load_int8_model(exported / "export" / "merged-int8")
    assert any(b.dtype == torch.int8 for b in q.buffers())
    merged = AutoModelForCausalLM.from_pretrained(str(exported / "export" / "merged")).eval()
    inputs = check_inputs(tokenizer)
    c = compare_logits(logits_of(merged, inputs), logits_of(q, inputs))
    # 0.08: served through the dynamic int8 Linear, activations are quantized too (5.9% on this random tiny
    # model, under 5% weight-only); greedy answers equal the int8 weights' own (tests/export/test_quantize.py)
    assert 0 < c["max_rel_diff"] < 0.08


def test_gguf_q8_blocks_decode_to_the_weights(tmp_path, tiny_model, tokenizer):
    """q8_0 tensors dequantise (with gguf's own reader) to llama.cpp's permuted layout of our weights."""
    import gguf
    import numpy as np

    from tuneforge.export.to_gguf import permute_qk, write_gguf

    path = tmp_path / "m.gguf"
    info = write_gguf(tiny_model, tokenizer, path, "q8_0", pre="smollm")
    cfg = tiny_model.config
    assert info["tensors"] == 2 + 9 * cfg.num_hidden_layers  # tied head: no output.weight
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    k = tensors["blk.1.attn_k.weight"]
    assert k.tensor_type == gguf.GGMLQuantizationType.Q8_0
    decoded = gguf.quants.dequantize(k.data, k.tensor_type).reshape(-1, cfg.hidden_size)
    expected = permute_qk(tiny_model.model.layers[1].self_attn.k_proj.weight.detach().numpy(),
                          cfg.num_attention_heads, cfg.num_key_value_heads)
    err = np.abs(decoded - expected).max()
    assert 0 < err < np.abs(expected).max() / 100  # 8-bit: close, not exact
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert reader.fields["llama.attention.head_count_kv"].contents() == cfg.num_key_value_heads
    assert reader.fields["tokenizer.chat_template"].contents() == tokenizer.chat_template


def test_merge_check_rejects_a_bad_merge(tmp_path, tiny_model_dir, monkeypatch):
    """If merged weights drifted from base+adapter, export refuses and leaves no merged folder."""
    import tuneforge.export.merge as merge_mod
    from tuneforge.errors import UserError
    from tuneforge.runs import open_run

    run = make_lora_run(tmp_path / "lora", tiny_model_dir)
    real = merge_mod.logits_of
    calls = {"n": 0}

    def drifting(model, inputs):
        calls["n"] += 1
        out = real(model, inputs)
        return out + 1.0 if calls["n"] == 3 else out  # the reloaded merged model's logits

    monkeypatch.setattr(merge_mod, "logits_of", drifting)
    weights = merge_mod.run_weights(open_run(run))
    with pytest.raises(UserError, match="disagrees"):
        merge_mod.merge_to_folder(weights, tmp_path / "out" / "merged")
    assert not (tmp_path / "out" / "merged").exists()


def test_export_without_weights_is_a_user_error(tmp_path, tiny_model_dir, capsys):
    from tuneforge.config import dump_recipe, load_recipe

    (tmp_path / "recipe.yaml").write_text(dump_recipe(load_recipe(None, {"model.name": str(tiny_model_dir)})))
    assert main(["export", str(tmp_path)]) == 2
    assert "no trained weights" in capsys.readouterr().err


def test_full_finetune_run_is_resaved_in_the_requested_dtype(tmp_path, tiny_model_dir):
    import shutil

    from transformers import AutoModelForCausalLM

    from tuneforge.config import dump_recipe, load_recipe

    shutil.copytree(tiny_model_dir, tmp_path / "run" / "model")
    (tmp_path / "run" / "recipe.yaml").write_text(dump_recipe(load_recipe(None, {"model.name": str(tiny_model_dir)})))
    assert main(["export", str(tmp_path / "run"), "--dtype", "bfloat16", "--tolerance", "0.05"]) == 0
    report = json.loads((tmp_path / "run" / "export" / "export.json").read_text())
    assert report["kind"] == "full" and report["merge_check"]["passed"]
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "run" / "export" / "merged"))
    assert merged.dtype == torch.bfloat16


@pytest.mark.slow  # transformers' GGUF reader parses the 49k-token vocabulary slowly (~1 minute)
def test_gguf_f32_export_reloads_identically_with_transformers(tmp_path, tiny_model_dir):
    """An independent reader (transformers undoes llama.cpp's Q/K permutation) gets the same logits."""
    run = make_lora_run(tmp_path / "lora", tiny_model_dir)
    assert main(["export", str(run), "--gguf", "f32"]) == 0
    report = json.loads((run / "export" / "export.json").read_text())
    assert report["gguf_check"]["tokenization_agreement"] == 1.0
    assert report["gguf_check"]["max_rel_diff"] < 1e-5  # f32: exact up to float rounding
    assert report["sizes_bytes"]["gguf-f32"] > report["sizes_bytes"]["adapter"]


def test_int8_copy_is_served_by_tuneforge_serve(exported):
    import openai

    from tests.serve.conftest import API_KEY, start_server

    running = start_server(exported / "export" / "merged-int8")
    try:
        assert any(b.dtype == torch.int8 for b in running.served.engine.model.buffers())
        client = openai.OpenAI(base_url=running.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=4, temperature=0)
        assert r.choices[0].message.content and r.usage.completion_tokens >= 1
    finally:
        running.stop()


def _crafted_run(tmp_path, tiny_model_dir):
    """A run folder whose recipe turns trust_remote_code on for a base model that ships its own Python code."""
    import shutil

    import yaml

    marker = tmp_path / "code-ran"
    model = tmp_path / "crafted-model"
    shutil.copytree(tiny_model_dir, model)
    (model / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n\n\nclass EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    run = make_lora_run(tmp_path / "runs" / "crafted", model)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["model"]["trust_remote_code"] = True
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return run, model, marker


def test_a_run_folders_own_recipe_cannot_make_export_run_code(tmp_path, tiny_model_dir, capsys):
    run, model, marker = _crafted_run(tmp_path, tiny_model_dir)
    assert main(["export", str(run)]) == 0
    assert not marker.exists()
    assert "ignored" in capsys.readouterr().err
    # The folder really does run code when the user grants it (so the check above can fail).
    from tuneforge.models import load_tokenizer

    load_tokenizer(str(model), trust_remote_code=True)
    assert marker.exists()


def test_a_run_folders_own_recipe_cannot_make_eval_run_code(tmp_path, tiny_model_dir):
    run, _, marker = _crafted_run(tmp_path, tiny_model_dir)
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"messages": [{"role": "user", "content": "Say yes."},
                                            {"role": "assistant", "content": "yes"}]}) + "\n")
    assert main(["eval", "--run", str(run), "--test", str(test), "--shots", "0", "--no-forgetting",
                 "--max-new-tokens", "2", "--no-report"]) == 0
    assert not marker.exists()


def test_a_failed_gguf_write_leaves_the_previous_file(tmp_path, tiny_model, tokenizer):
    from tests.faults import WRITE_ERRORS, disk_full, snapshot
    from tuneforge.export.to_gguf import write_gguf

    write_gguf(tiny_model, tokenizer, tmp_path / "model-f32.gguf", "f32")
    before = snapshot(tmp_path)
    with disk_full(64 * 1024), pytest.raises(WRITE_ERRORS):  # the file is megabytes
        write_gguf(tiny_model, tokenizer, tmp_path / "model-f32.gguf", "f32")
    assert snapshot(tmp_path) == before  # not truncated, no temporary left


def test_a_failed_int8_write_leaves_the_previous_copy(tmp_path, tiny_model, tokenizer, monkeypatch):
    from tests.faults import snapshot
    from tuneforge.export.quantize import save_int8

    save_int8(tiny_model, tokenizer, tmp_path / "merged-int8")
    before = snapshot(tmp_path)

    def fails_midway(folder, *args, **kwargs):  # the weights are written; the tokenizer breaks off
        (folder / "tokenizer.json").write_text('{"version": "1.0", "trunc')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tokenizer, "save_pretrained", fails_midway)
    with pytest.raises(OSError):
        save_int8(tiny_model, tokenizer, tmp_path / "merged-int8")
    assert snapshot(tmp_path) == before  # not new weights beside a broken tokenizer under the old marker


def test_merged_files_reach_the_disk_before_the_folder_appears(exported, tmp_path, monkeypatch):
    from tests.faults import fsynced
    from tuneforge.export.merge import merge_to_folder, run_weights
    from tuneforge.runs import open_run

    with fsynced(monkeypatch) as names:
        merge_to_folder(run_weights(open_run(exported)), tmp_path / "merged")
    assert {p.name for p in (tmp_path / "merged").iterdir()} <= set(names)
