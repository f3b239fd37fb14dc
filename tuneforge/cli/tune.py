"""`tuneforge tune RECIPE`: hyperparameter search with Optuna, shareable between workers."""

from __future__ import annotations

import argparse

from tuneforge.cli.common import add_recipe_args, flag, recipe_from_args
from tuneforge.errors import UserError

EPILOG = """\
examples:
  tuneforge tune examples/tune.yaml                          # study in runs/drug-rating.db (SQLite)
  tuneforge tune examples/tune.yaml --trials 4 &             # two workers, one study:
  tuneforge tune examples/tune.yaml --trials 4               #   each runs 4 trials, both learn from all 8
  tuneforge tune examples/tune.yaml --storage postgresql://user@db/optuna   # workers on many machines
  OPTUNA_STORAGE=postgresql://user:pw@db/optuna tuneforge tune examples/tune.yaml --storage-env OPTUNA_STORAGE
                                                             # a password stays out of argv and run folders
  tuneforge train runs/tune-drug-rating/best.yaml            # train the best trial's recipe for real

Each worker writes runs/<name>/ (a numeric suffix keeps workers apart): trials/trial-NNN/ (each trial's
training run), best.yaml (the best trial of the whole study as a ready recipe) and tune/report.html
(optimisation history, learning curves, slice plots, importances, every trial).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="Hyperparameter search (Optuna): several workers may share one study.",
        description="Search the recipe's tune.space (learning rate, LoRA rank/alpha/dropout, epochs, batch size, "
        "weight decay, warmup): each trial fine-tunes and is scored on validation loss, unpromising trials "
        "are pruned early. The study is stored in a database (SQLite by default, or any URL Optuna accepts) "
        "so workers on several machines pointed at the same storage share trials.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(p, positional=True)
    flag(p, "--trials", "tune.n_trials", type=int, help="Trials this worker runs.")
    flag(p, "--max-total-trials", "tune.max_total_trials", type=int, help="Stop once the study has N finished trials.")
    flag(p, "--storage", "tune.storage", help="Optuna storage URL (sqlite:///study.db, postgresql://...).")
    flag(p, "--storage-env", "tune.storage_env", help="Environment variable holding the storage URL (keeps a password out of argv).")
    flag(p, "--study", "tune.study_name", help="Study name inside the storage.")
    flag(p, "--pruner", "tune.pruner", choices=["median", "hyperband", "none"], help="Early stopping of trials.")
    flag(p, "--sampler", "tune.sampler", choices=["tpe", "random"], help="How trials pick values.")
    flag(p, "--steps-per-trial", "tune.max_steps_per_trial", type=int, help="Cap each trial's optimizer steps.")
    flag(p, "--timeout", "tune.timeout_s", type=float, help="Stop starting trials after N seconds.")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if recipe.tune is None:
        raise UserError(f"{args.recipe or 'the recipe'}: no tune section; add tune.space (see examples/tune.yaml)")
    from tuneforge.provenance import seed_everything
    from tuneforge.runs import create_run
    from tuneforge.strategies.tune import default_storage, run_tune

    default_storage(recipe, recipe.tune)  # an unset tune.storage_env fails here, before any work
    seed_everything(recipe.run.seed)
    with create_run(recipe, "tune", inputs=[args.recipe] if args.recipe else []) as run:  # trials live inside
        result = run_tune(recipe, run)
    print(f"study {result.study_name}: this worker ran {result.trials_run} trials")
    if result.best_value is not None:
        print(f"best validation loss {result.best_value:.4f} with {result.best_params}")
        print(f"best recipe: {result.best_recipe}   (train it: tuneforge train {result.best_recipe})")
    print(f"report: {result.report}")
    return 0
