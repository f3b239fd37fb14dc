"""`tuneforge export RUN --for vllm`: an adapter vLLM can serve stays an adapter; anything else is merged.

vLLM itself needs a GPU machine; these tests check the files and the command it would be given.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.export.helpers import make_lora_run
from tuneforge.cli.main import main
from tuneforge.export.vllm import adapter_problems, max_lora_rank


def _edit_adapter(run: Path, **changes) -> None:
    path = run / "adapter" / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_a_lora_adapter_is_kept_and_served_beside_its_base(tmp_path, tiny_model_dir, capsys):
    run = make_lora_run(tmp_path / "lora", tiny_model_dir)  # r=4 on q_proj, v_proj, down_proj
    assert main(["export", str(run), "--for", "vllm"]) == 0
    out = run / "export" / "vllm"
    kept = load_file(out / "adapter" / "adapter_model.safetensors")
    original = load_file(run / "adapter" / "adapter_model.safetensors")
    assert kept.keys() == original.keys() and all(torch.equal(kept[k], original[k]) for k in kept)
    assert not (out / "model").exists()
    script = (out / "serve.sh").read_text()
    command = shlex.split(script.splitlines()[-1].removeprefix("exec "))
    assert command[:3] == ["vllm", "serve", "$BASE"]
    assert command[command.index("--lora-modules") + 1] == f"lora={out / 'adapter'}"
    assert command[command.index("--max-lora-rank") + 1] == "8"  # r=4: vLLM's smallest rank slot that holds it
    assert "--enable-lora" in command
    assert f"BASE=${{BASE:-{tiny_model_dir}}}" in script
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in (out / "README.md").read_text()
    assert "vLLM adapter:" in capsys.readouterr().out


def test_dora_is_merged_into_full_weights_with_the_logit_check(tmp_path, tiny_model_dir):
    run = make_lora_run(tmp_path / "dora", tiny_model_dir)
    _edit_adapter(run, use_dora=True)  # PEFT reloads it as DoRA (magnitudes from the base weights)
    assert main(["export", str(run), "--for", "vllm"]) == 0
    out = run / "export" / "vllm"
    report = json.loads((out / "vllm.json").read_text())
    assert report["kind"] == "model" and report["problems"] == ["vLLM does not support DoRA"]
    assert report["merge_check"]["passed"] and (out / "model" / "config.json").is_file()
    assert not (out / "adapter").exists()
    command = shlex.split((out / "serve.sh").read_text().splitlines()[-1].removeprefix("exec "))
    assert command[:3] == ["vllm", "serve", str(out / "model")] and "--enable-lora" not in command


def test_prompt_tuning_cannot_go_to_vllm(tmp_path, tiny_model_dir, capsys):
    run = make_lora_run(tmp_path / "prompt", tiny_model_dir)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
    assert main(["export", str(run), "--for", "vllm"]) == 2
    err = capsys.readouterr().err
    assert "PROMPT_TUNING adapter prepends virtual tokens" in err and "Traceback" not in err


@pytest.mark.parametrize(("config", "problem"), [
    ({"peft_type": "IA3"}, "vLLM serves LoRA adapters only, not IA3"),
    ({"r": 8, "target_modules": ["q_proj", "embed_tokens"]}, "not embed_tokens"),
    ({"r": 8, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}, "modules_to_save (lm_head)"),
    ({"r": 8, "target_modules": ".*proj"}, "is a pattern"),
    ({"r": 1024, "target_modules": ["q_proj"]}, "above vLLM's largest --max-lora-rank 512"),
])
def test_what_vllm_cannot_serve_as_an_adapter_is_named(config, problem):
    assert any(problem in p for p in adapter_problems(config))


def test_max_lora_rank_is_the_smallest_slot_that_holds_every_rank():
    assert max_lora_rank({"r": 16}) == 16
    assert max_lora_rank({"r": 40}) == 64
    assert max_lora_rank({"r": 8, "rank_pattern": {"layers.0.q_proj": 300}}) == 320
    assert adapter_problems({"r": 16, "target_modules": ["q_proj", "v_proj"], "use_rslora": True}) == []
