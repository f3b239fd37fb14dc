"""Strategies: what composes the training engine (:mod:`tuneforge.train`) with evaluation
(:mod:`tuneforge.eval`) into a whole run.

=============  ==============================================================================
``sft``        prepare the data, train, evaluate (``tuneforge train``, the quickstart)
``multitask``  prepare several tasks, mix them, train once, score each (``tuneforge multitask``)
``stages``     train stages in order, each from the last; gained vs forgotten (``tuneforge stages``)
``tune``       hyperparameter search with Optuna, trials as child runs (``tuneforge tune``)
=============  ==============================================================================

Like torchtune's recipe interface, :class:`Strategy` describes the shape every strategy has without
sharing code: a call that takes a resolved recipe and its run folder and returns a summary (also
written into the run folder). ``common.py`` holds the pieces more than one strategy uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tuneforge.config.recipe import Recipe
    from tuneforge.runs import Run


class Strategy(Protocol):
    """``strategy(recipe, run, model=None, tokenizer=None) -> summary``; ``model``/``tokenizer`` may be
    passed in already loaded (notebooks, tests); the summary is JSON-ready."""

    def __call__(self, recipe: Recipe, run: Run, model: Any = None, tokenizer: Any = None) -> dict[str, Any]: ...


def get(name: str) -> Strategy:
    """The strategy called ``name`` (sft, multitask, stages or tune)."""
    if name == "sft":
        from tuneforge.strategies.sft import sft_summary

        return sft_summary
    if name == "multitask":
        from tuneforge.strategies.multitask import run_multitask

        return run_multitask
    if name == "stages":
        from tuneforge.strategies.stages import run_stages

        return run_stages
    if name == "tune":
        from tuneforge.strategies.tune import tune_summary

        return tune_summary
    raise KeyError(f"no strategy {name!r}; choose sft, multitask, stages or tune")


__all__ = ["Strategy", "get"]
