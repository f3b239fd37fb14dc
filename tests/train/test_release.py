"""Nothing held twice: what only training needs is gone when ``train()`` hands the model back."""

from __future__ import annotations

import weakref

from tests.train.helpers import write_recipe


def test_train_frees_optimizer_scheduler_and_gradients_before_returning(tmp_path, tiny_model_dir, prepared_dir,
                                                                         monkeypatch):
    import tuneforge.train.api as api
    from tuneforge.config import load_recipe
    from tuneforge.runs import create_run

    made: dict[str, weakref.ref] = {}

    def optimizer(model, cfg):
        opt = make_optimizer(model, cfg)
        made["optimizer"] = weakref.ref(opt)
        return opt

    def scheduler(opt, cfg, n_steps):
        sched = make_scheduler(opt, cfg, n_steps)
        made["scheduler"] = weakref.ref(sched)
        return sched

    trimmed: list[bool] = []  # at the call: was the optimizer already gone?
    monkeypatch.setattr(api, "return_freed_memory", lambda: trimmed.append(made["optimizer"]() is None))
    make_optimizer, make_scheduler = api.make_optimizer, api.make_scheduler
    monkeypatch.setattr(api, "make_optimizer", optimizer)
    monkeypatch.setattr(api, "make_scheduler", scheduler)
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_model_dir, prepared_dir, tmp_path / "runs",
                                      max_steps=2, eval_every=1))
    result = api.train(recipe, create_run(recipe, "train"), prepared_dir / "train.jsonl", prepared_dir / "val.jsonl")

    # The evaluation that follows holds the trained model only: the optimizer's moments are not kept alive
    # beside it (no gc.collect() here: train() must have released them itself).
    assert made["optimizer"]() is None and made["scheduler"]() is None
    assert all(p.grad is None for p in result.model.parameters())
    assert result.steps == 2
    assert trimmed == [True]  # freed heap memory handed back once, after the training state was gone


def test_return_freed_memory_runs_here():
    from tuneforge.train.memory import return_freed_memory

    return_freed_memory()  # glibc's malloc_trim here; a no-op where the C library has none
