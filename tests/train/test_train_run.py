"""End to end on the tiny model: `tuneforge train`, its outputs, and what plain PEFT/transformers load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.train.helpers import write_recipe
from tuneforge.cli.main import main


def _recipe(tmp_path: Path, tiny_model_dir: Path, prepared_dir: Path, **train) -> Path:
    return write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs", **train)


def test_lora_run_lowers_val_loss_and_adapter_loads_in_plain_peft(tmp_path, tiny_model_dir, prepared_dir, tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneforge.config import load_recipe
    from tuneforge.runs import create_run
    from tuneforge.train import train

    recipe = load_recipe(_recipe(tmp_path, tiny_model_dir, prepared_dir, lora={"dropout": 0.0}))
    run = create_run(recipe, "train")
    result = train(recipe, run, prepared_dir / "train.jsonl", prepared_dir / "val.jsonl")
    assert result.output_dir == run.path / "adapter" and result.method == "lora"
    assert result.best_val_loss < result.initial_val_loss
    assert result.steps == 6 and result.train_tokens > 0 and result.tokens_per_s > 0
    assert 0 < result.trainable_params < result.total_params

    # The adapter folder loads in plain PEFT, and gives the logits the trained model gives in tuneforge.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = PeftModel.from_pretrained(base, result.output_dir).eval()
    ids = tokenizer("The film is a delight.", return_tensors="pt").input_ids
    with torch.no_grad():
        ours = result.model.eval()(input_ids=ids).logits
        theirs = plain(input_ids=ids).logits
        untrained = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, untrained, atol=1e-3)

    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "val"}
    assert any(r["split"] == "train" and "tokens_per_s" in r for r in rows)
    assert list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((run.path / "train_result.json").read_text())["steps"] == 6


def test_full_fine_tuning_writes_a_folder_transformers_loads(tmp_path, tiny_model_dir, prepared_dir, capsys):
    from transformers import AutoModelForCausalLM

    recipe = _recipe(tmp_path, tiny_model_dir, prepared_dir, method="full", max_steps=2, learning_rate=1e-3)
    assert main(["train", str(recipe), "--name", "full"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters: 3,219,776 of 3,219,776 (100.0000%)" in out
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "runs" / "full" / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    w = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(tuned.state_dict()[w], base.state_dict()[w])


def test_a_run_that_cannot_fit_stops_with_the_estimate_and_what_to_change(tmp_path, tiny_model_dir, prepared_dir, capsys):
    recipe = _recipe(tmp_path, tiny_model_dir, prepared_dir, method="full", memory_limit_gb=0.001)
    assert main(["train", str(recipe), "--name", "oom"]) == 2
    err = capsys.readouterr().err
    assert "no plan fits 0.00 GB" in err and "gradient checkpointing needs about" in err
    assert "train.max_length" in err and "train.method: lora" in err and "train.memory_limit_gb" in err
    assert not (tmp_path / "runs" / "oom" / "model").exists()


def test_on_eval_hook_can_stop_a_run_early(tmp_path, tiny_model_dir, prepared_dir):
    from tuneforge.config import load_recipe
    from tuneforge.runs import create_run
    from tuneforge.train import train

    recipe = load_recipe(_recipe(tmp_path, tiny_model_dir, prepared_dir, max_steps=12, eval_every=2))
    seen: list[tuple[int, float]] = []

    def prune(step: int, val_loss: float) -> bool:
        seen.append((step, val_loss))
        return step >= 4

    result = train(recipe, create_run(recipe, "train"), prepared_dir / "train.jsonl", prepared_dir / "val.jsonl",
                   on_eval=prune)
    assert [s for s, _ in seen] == [2, 4]
    assert result.steps == 4 and result.stopped_early


def test_resume_without_a_name_is_a_user_error(tmp_path, tiny_model_dir, prepared_dir, capsys):
    recipe = _recipe(tmp_path, tiny_model_dir, prepared_dir)
    assert main(["train", str(recipe), "--resume"]) == 2
    assert "--resume needs the run's name" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["ia3", "prompt_tuning"])
def test_other_peft_methods_write_standard_adapters(tmp_path, tiny_model_dir, prepared_dir, method):
    from peft import PeftConfig

    recipe = _recipe(tmp_path, tiny_model_dir, prepared_dir, method=method, max_steps=2, prompt={"num_virtual_tokens": 4})
    assert main(["train", str(recipe), "--name", method]) == 0
    cfg = PeftConfig.from_pretrained(tmp_path / "runs" / method / "adapter")
    assert cfg.peft_type.value.lower().replace("_", "") == method.replace("_", "")


def test_model_adapter_continues_training_that_adapter(tmp_path, tiny_model_dir, prepared_dir):
    from safetensors.torch import load_file

    recipe = _recipe(tmp_path, tiny_model_dir, prepared_dir, max_steps=2, lora={"dropout": 0.0})
    assert main(["train", str(recipe), "--name", "first"]) == 0
    first = tmp_path / "runs" / "first" / "adapter"
    assert main(["train", str(recipe), "--name", "second", "--adapter", str(first)]) == 0
    a = load_file(first / "adapter_model.safetensors")
    b = load_file(tmp_path / "runs" / "second" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    # A fresh start with the same seed and data would reproduce `a` exactly; continuing moves past it.
    key = next(k for k in a if "lora_B" in k)
    assert a[key].abs().sum() > 0 and not torch.equal(a[key], b[key])
