"""Peak RSS of each forgetting probe on the quickstart's model: which probe raises the evaluation's peak.

Loads the quickstart recipe's base model, draws every probe's inputs (the recipe's eval settings), then
runs the probes one at a time; after each it prints RSS now, the peak during it (``VmHWM``, reset after
every mark), and the file-backed part (the mmapped weights). Probes to run are named on the command
line (default: drift, general_loss, behaviour; ``mc`` adds the multiple-choice probes first).

    python -m bench.forgetting_memory                       # drift reference, general loss, behaviour, drift
    python -m bench.forgetting_memory mc drift general_loss
"""

from __future__ import annotations

import sys
import time

from bench.memory_phases import _reset_peak, _status_mb

_T0 = time.monotonic()


def mark(label: str) -> None:
    rss, hwm, file_mb = _status_mb()
    print(f"{label:<28} RSS {rss:6.0f} MB  peak during {hwm:6.0f} MB  file {file_mb:5.0f} MB  "
          f"at {time.monotonic() - _T0:5.0f} s", flush=True)
    _reset_peak()


def main(argv: list[str]) -> None:
    import torch

    from tuneforge.config.loader import load_recipe
    from tuneforge.eval.forgetting import ForgettingSuite
    from tuneforge.eval.general_data import behaviour_inputs, drift_inputs, loss_inputs
    from tuneforge.eval.probes import load_probe
    from tuneforge.models import load_model, load_tokenizer
    from tuneforge.strategies.quickstart import quickstart_recipe_path

    which = [a for a in argv if a != "mc"] or ["drift", "general_loss", "behaviour"]
    mark("start")
    recipe = load_recipe(quickstart_recipe_path(), [])
    cfg, seed = recipe.eval, recipe.run.seed
    tok = load_tokenizer(recipe.model.name)
    model = load_model(recipe.model, adapter="").eval()
    mark("imports, model loaded")
    suite = ForgettingSuite(tok, cfg, seed, task_answers=["positive", "negative"])
    for name in suite.multiple_choice:
        suite._questions[name] = load_probe(name, cfg, seed)
    for draw in (drift_inputs, loss_inputs, behaviour_inputs):
        draw(cfg.general_examples, seed)
    mark("probe inputs drawn")
    with torch.inference_mode():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    mark("weights resident")
    if "mc" in argv:
        for name in suite.multiple_choice:
            suite._multiple_choice(model, name, "base")
            mark(f"multiple choice {name}")
    if "drift" in which:
        suite.reference = suite._drift_reference(model, "base")
        mark("drift reference")
    if "general_loss" in which:
        suite._general_loss(model, "base")
        mark("general loss")
    if "behaviour" in which:
        suite._behaviour(model, "base")
        mark("behaviour (generation)")
    if "drift" in which:
        suite._drift(model, "base")
        mark("drift")


if __name__ == "__main__":
    main(sys.argv[1:])
