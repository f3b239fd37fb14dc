"""Sequential (staged) fine-tuning: general -> domain -> sub-domain, each stage starting from the last.

``run_stages(recipe, run)`` trains ``recipe.stages`` in order. Each stage has its own data and train
overrides and starts from the previous stage's result:

- ``start_from: merged``: the previous stage's adapter is merged into the weights and the stage trains
  a fresh adapter on top (full fine-tuning stages simply continue from the saved weights);
- ``start_from: adapter``: the stage keeps training the previous stage's adapter on the same base.

``replay`` mixes a share of earlier stages' training data into a stage's training set to curb
forgetting. Before the first stage, the base model is scored on every stage's test set; after stage k
it is scored on the test sets of stages 1..k, and (``eval.forgetting``) on general text and instructions
outside every stage's data: drift from the base model and loss on general answers. The report (``<run>/report.md``, ``<run>/strategy.json``,
rows in ``<run>/eval/results.json``) shows, stage by stage, what was gained on the new task and what was
forgotten on the earlier ones. Each stage's training run lives in ``<run>/stages/<k>-<name>/``; the
final weights (every merged stage plus the last adapter, merged) are saved to ``<run>/model``.
"""

from __future__ import annotations

import copy
import gc
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge import atomic
from tuneforge.config.loader import derive_recipe, flatten
from tuneforge.config.recipe import Recipe
from tuneforge.errors import UserError
from tuneforge.runs import DATA, MODEL
from tuneforge.strategies.common import (
    TaskFiles,
    forgetting_suite,
    forgetting_summary,
    leave_room,
    load_tuned,
    prepare_task,
    probe_forgetting,
    score_tasks,
    write_json,
)
from tuneforge.strategies.mixture import draw, read_jsonl, write_jsonl
from tuneforge.strategies.stages_report import forgetting_table, stages_markdown

if TYPE_CHECKING:
    from tuneforge.runs import Run, TunedWeights

log = logging.getLogger(__name__)
GENERAL_STAGE_PROBES = ("drift", "general_loss")  # what every stage is probed with (behaviour and the
# multiple-choice benchmarks cost generation or many questions per stage; the final model can get them
# from `tuneforge eval`)


@dataclass
class StagePlan:
    index: int  # 1-based
    name: str
    recipe: Recipe  # the recipe this stage trains with (its data, its merged train section)
    start_from: str
    replay: float

    @property
    def folder(self) -> str:
        return f"{self.index}-{self.name}"


def plan_stages(recipe: Recipe) -> list[StagePlan]:
    """Resolve every stage's recipe up front, so a bad stage fails before any training."""
    if not recipe.stages:
        raise UserError("the recipe has no stages; list them under stages: (see examples/sequential.yaml)")
    plans: list[StagePlan] = []
    for i, stage in enumerate(recipe.stages, 1):
        stage_recipe = derive_recipe(recipe, {"data": stage.data.model_dump(mode="json"), "stages": None,
                                              "mixture": None, "tune": None, **flatten(stage.train, "train")})
        if i > 1 and stage.start_from == "adapter":
            prev = plans[-1].recipe.train.method
            method = stage_recipe.train.method
            if not stage_recipe.train.is_peft or method != prev:
                raise UserError(
                    f"stages[{i - 1}] ({stage.name}): start_from adapter continues the previous stage's adapter, "
                    f"so both stages need the same adapter method (got {prev} then {method}); use start_from: merged"
                )
        plans.append(StagePlan(i, stage.name, stage_recipe, stage.start_from if i > 1 else "base", stage.replay))
    return plans


def replay_rows(stage_rows: list[dict[str, Any]], earlier: list[Path], share: float, seed: int) -> list[dict[str, Any]]:
    """``stage_rows`` plus earlier stages' examples making up ``share`` of the result, shuffled.

    Earlier stages contribute equally (each keeps its own task tag), so the oldest stage is not left out.
    """
    if share <= 0 or not earlier:
        return stage_rows
    rng = random.Random(seed)
    n_replay = round(len(stage_rows) * share / (1 - share))
    per, extra = divmod(n_replay, len(earlier))
    rows = list(stage_rows)
    for j, path in enumerate(earlier):
        pool = read_jsonl(path)
        rows += draw(pool, per + (1 if j < extra else 0), rng)
    rng.shuffle(rows)
    return rows


@dataclass
class _Current:
    """What the next stage starts from.

    ``weights``: everything so far merged into plain weights. ``adapter`` and ``adapter_base``: the last
    stage's adapter and the weights it applies to, so a stage can keep training that adapter instead.
    """

    weights: Any
    adapter: Path | None = None
    adapter_base: Any = None


def _continues_adapter(current: _Current, plan: StagePlan) -> bool:
    return plan.start_from == "adapter" and current.adapter is not None


def _stage_model(current: _Current, plan: StagePlan):
    """The (copied) model handed to train(): merged weights, or the adapter's base + the adapter, trainable."""
    if not _continues_adapter(current, plan):
        return copy.deepcopy(current.weights)
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(current.adapter_base), str(current.adapter), is_trainable=True)


def _after(current: _Current, plan: StagePlan, weights: TunedWeights, next_continues: bool) -> tuple[_Current, Any]:
    """(what the next stage starts from, the model to score now) after a stage trained ``weights``. The
    weights the adapter applies to are kept only for a next stage that continues the adapter
    (``next_continues``): otherwise they are one more model copy in memory for nothing."""
    if weights.adapter is None:
        tuned = load_tuned(plan.recipe, weights)
        return _Current(tuned), tuned
    from peft import PeftModel

    # The adapter applies to what this stage trained on (not to the bundled base): load it onto that.
    trained_on = current.adapter_base if _continues_adapter(current, plan) else current.weights
    scored = PeftModel.from_pretrained(copy.deepcopy(trained_on), str(weights.adapter)).eval()
    merged = copy.deepcopy(scored).merge_and_unload().eval()
    return _Current(merged, adapter=weights.adapter, adapter_base=trained_on if next_continues else None), scored


def _budgeted(recipe: Recipe, current: _Current) -> Recipe:
    """A stage's recipe whose explicit ``train.memory_limit_gb`` leaves room for the weights held beside the copy
    being trained: those the stage starts from, and an adapter's base."""
    return leave_room(recipe, current.weights, current.adapter_base)


def run_stages(recipe: Recipe, run: Run, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Train every stage in order; score after each; write the gained/forgotten report."""
    from tuneforge.eval.results import write_results
    from tuneforge.models import load_model, load_tokenizer
    from tuneforge.train import train

    plans = plan_stages(recipe)
    tokenizer = tokenizer or load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
    # All data first: a data problem in stage 3 should not surface after two stages of training.
    tasks: dict[str, TaskFiles] = {}
    for p in plans:
        tasks[p.name] = prepare_task(p.name, p.recipe.data, run.path / "stages" / p.folder / DATA, tokenizer,
                                     recipe.run.seed)
    run.add_inputs([t.train for t in tasks.values()] + [t.test for t in tasks.values()])

    base = model if model is not None else load_model(recipe.model)
    scores: dict[str, dict[str, Any]] = {"base": _by_task(score_tasks(base, tokenizer, tasks, recipe, "base"))}
    # General ability along the way: drift and general loss (the cheap probes) after every stage.
    suite = forgetting_suite(recipe, tokenizer, tasks, general=[p for p in recipe.eval.general_probes
                                                                 if p in GENERAL_STAGE_PROBES], multiple_choice=[])
    general_rows = probe_forgetting(base, suite, "base")
    all_rows = [r for r in scores["base"].values()] + general_rows
    current = _Current(base)
    del base  # from here on `current` says which weights stay in memory
    stage_results = []
    for p in plans:
        stage_run = run.child(p.recipe, "stages", p.folder)
        task = tasks[p.name]
        earlier = [tasks[q.name].train for q in plans if q.index < p.index]
        train_file = task.train
        if p.replay > 0 and earlier:
            rows = replay_rows(read_jsonl(task.train), earlier, p.replay, recipe.run.seed + p.index)
            train_file = write_jsonl(stage_run.path / DATA / "train_with_replay.jsonl", rows)
        print(f"stage {p.index}/{len(plans)} {p.name}: start from {p.start_from}"
              + (f", replay {p.replay:.0%}" if p.replay and earlier else ""))
        val = task.val if task.counts["val"] else None
        result = train(_budgeted(p.recipe, current), stage_run, train_file, val, model=_stage_model(current, p),
                       tokenizer=tokenizer)
        # The stage's trained copy is not scored (its saved adapter or weights are, read back below): free it
        # before the scoring copies are made, and so that it does not sit beside the next stage's training.
        result.model = None
        gc.collect()
        following = plans[p.index] if p.index < len(plans) else None  # StagePlan.index counts from 1
        current, scored = _after(current, p, stage_run.tuned_weights(required=True),
                                 following is not None and following.start_from == "adapter")
        seen = {q.name: tasks[q.name] for q in plans if q.index <= p.index}
        system = f"after {p.folder}"
        rows = score_tasks(scored, tokenizer, seen, recipe, system)
        scores[system] = _by_task(rows)
        stage_general = probe_forgetting(scored, suite, system)
        general_rows += stage_general
        all_rows += rows + stage_general
        stage_results.append({"stage": p.folder, "output_dir": str(result.output_dir), "method": result.method,
                              "start_from": p.start_from, "replay": p.replay, "steps": result.steps,
                              "initial_val_loss": result.initial_val_loss, "best_val_loss": result.best_val_loss,
                              "train_examples": len(read_jsonl(train_file))})
        for tname, row in scores[system].items():
            run.log_metrics(step=p.index, split="stage_test", stage=p.name, task=tname,
                            **{k: v.value for k, v in row.metrics.items()})
        del scored
    write_results(run.path, all_rows)
    final = run.path / MODEL
    with atomic.replace_folder(final) as tmp:
        current.weights.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    order = [p.name for p in plans]
    after = [f"after {p.folder}" for p in plans]
    summary = {"kind": "stages", "stages": stage_results, "final_model": str(final),
               "table": forgetting_table(scores, order, after),
               "general": {s: forgetting_summary(general_rows, recipe, s) for s in after} if suite else {}}
    write_json(run.path / "strategy.json", summary)
    atomic.write_text(run.path / "report.md", stages_markdown(summary))
    return summary


def _by_task(rows: list) -> dict[str, Any]:
    return {r.task: r for r in rows}
