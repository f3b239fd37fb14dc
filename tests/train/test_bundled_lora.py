"""The real thing, briefly: LoRA on the bundled SmolLM2-135M with real reviews lowers validation loss."""

from __future__ import annotations

import json

import pytest
import torch

from tuneforge.cli.main import main


@pytest.mark.slow
def test_tuneforge_train_lora_on_bundled_model_lowers_validation_loss(run_dir, tokenizer):
    from peft import PeftModel

    from tuneforge.models import load_model

    code = main([
        "train", str(_repo() / "examples" / "quick-lora.yaml"), "--name", "slow-lora",
        "--set", "data.max_examples=40", "--set", "data.val_fraction=0.3", "--max-steps", "4", "--grad-accum", "1",
        "--set", "train.eval_every=4", "--set", "train.save_every=4", "--set", "train.warmup_ratio=0", "--no-eval",
    ])
    assert code == 0
    run = run_dir / "runs" / "slow-lora"
    result = json.loads((run / "train_result.json").read_text())
    assert result["best_val_loss"] < result["initial_val_loss"]
    assert (run / "data" / "train.jsonl").is_file()  # prepared from the bundled dataset into the run
    # The adapter loads in plain PEFT on the bundled base and changes its answers' logits.
    base = load_model("smollm2-135m-instruct")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "A joyless, tedious film."}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        before = base(input_ids=ids).logits[0, -1]
        tuned = PeftModel.from_pretrained(base, run / "adapter").eval()
        after = tuned(input_ids=ids).logits[0, -1]
    assert not torch.allclose(before, after, atol=1e-3)


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]
