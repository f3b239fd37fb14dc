"""The planner on recipe-like runs: its estimate is of micro-batches the run really trains on, and the
examples' shapes get a plan that fits 4 GB while keeping the recipe's rows per step."""

from __future__ import annotations

import pytest

from tests.train.helpers import write_recipe
from tests.train.shapes import GEMMA_LORA, SMOL_FULL, SMOL_LORA
from tuneforge.train.memory import GB, ModelShapes, estimate_batch
from tuneforge.train.planner import choose_plan


@pytest.mark.parametrize("shapes,rows,accum,width", [
    (SMOL_LORA, 4, 2, 512),  # examples/lora.yaml, multitask.yaml, sequential.yaml
    (SMOL_FULL, 4, 4, 512),  # examples/full.yaml
    (SMOL_LORA, 8, 1, 512),  # examples/tune.yaml (batch 8; its search space goes to 16)
    (GEMMA_LORA, 4, 2, 512),  # examples/gemma3-270m-instruct.yaml
])
def test_the_examples_get_a_plan_that_fits_4_gb(shapes, rows, accum, width):
    def estimate(n: int, ckpt: bool):  # full packed rows: the heaviest micro-batch such a run has
        return estimate_batch(shapes, n, width, ckpt, logit_positions=n * width // 2, chunked_logits=True)

    assert estimate(rows, False).total > 4 * GB  # the recipe's own micro-batch does not fit
    plan = choose_plan(rows * accum, estimate, 4 * GB, method="lora", max_micro=rows)
    assert plan.estimate.total <= 4 * GB
    assert plan.batch_size * plan.grad_accum == rows * accum  # the recipe's global batch is kept
    assert plan.batch_size < rows


def test_the_estimate_is_of_a_micro_batch_the_run_trains_on(tmp_path, tiny_model_dir, prepared_dir):
    """Unpacked rows of different lengths: the planner estimates the heaviest micro-batch of the steps the
    run takes, not the widest row of the whole data times the rows (which a 2-step run never meets)."""
    from tuneforge.config import load_recipe
    from tuneforge.runs import create_run
    from tuneforge.train import api, loop, train

    path = write_recipe(tmp_path / "r.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs", batch_size=2,
                        max_steps=2, packing=False, eval_at_start=False, eval_every=100, save_every=100,
                        memory_limit_gb=64)
    recipe = load_recipe(path)
    plans, batches, shapes = [], [], []
    inner_plan, inner_collate, inner_est = api.choose_plan, loop.collate, api._estimator

    def plan(*args, **kwargs):
        plans.append(inner_plan(*args, **kwargs))
        return plans[-1]

    def collate(*args, **kwargs):
        batches.append(inner_collate(*args, **kwargs))
        return batches[-1]

    def estimator(model, *args, **kwargs):
        shapes.append(ModelShapes.of(model))
        return inner_est(model, *args, **kwargs)

    api.choose_plan, loop.collate, api._estimator = plan, collate, estimator
    try:
        train(recipe, create_run(recipe, "train"), prepared_dir / "train.jsonl", None)
    finally:
        api.choose_plan, loop.collate, api._estimator = inner_plan, inner_collate, inner_est
    assert len(batches) == 2
    trained = [estimate_batch(shapes[0], b.input_ids.shape[0], b.input_ids.shape[1], False,
                              logit_positions=b.n_target, chunked_logits=True).total for b in batches]
    assert plans[0].estimate.total == pytest.approx(max(trained))
