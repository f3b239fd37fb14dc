"""Pinned losses: a fixed recipe on the tiny model gives these exact losses, step by step.

As torchtune's recipe tests pin expected loss values, this test pins the first steps of a LoRA run and a
full fine-tuning run, so that moving code around (or "harmless" refactors of the loop, packing, collate or
loss) is proven to change nothing. If a change is *meant* to change the numbers, re-pin them in the same
commit and say why in its message.
"""

from __future__ import annotations

import json

import pytest

from tests.train.helpers import write_recipe

PINNED = {
    "lora": {"train": [10.868704, 10.719396, 10.600335, 10.529434], "val": [10.862092, 10.597063, 10.511764]},
    "full": {"train": [10.868704, 10.479612, 10.272672, 10.151643], "val": [10.862092, 10.271636, 10.111724]},
}


def _losses(run_path) -> dict[str, list[float]]:
    rows = [json.loads(x) for x in (run_path / "metrics.jsonl").read_text().splitlines()]
    return {
        split: [r["loss"] for r in rows if r.get("split") == split and "loss" in r and "task" not in r]
        for split in ("train", "val")
    }


@pytest.mark.parametrize("method", ["lora", "full"])
def test_losses_are_pinned(method, tmp_path, tiny_model_dir, prepared_dir):
    from tuneforge.config import load_recipe
    from tuneforge.runs import create_run
    from tuneforge.train import train

    path = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs", method=method,
                        max_steps=4, eval_every=2, lora={"dropout": 0.0})
    recipe = load_recipe(path)
    train(recipe, create_run(recipe, "train"), prepared_dir / "train.jsonl", prepared_dir / "val.jsonl")
    got = _losses(next((tmp_path / "runs").iterdir()))
    for split in ("train", "val"):
        assert got[split] == pytest.approx(PINNED[method][split], abs=1e-5), split
