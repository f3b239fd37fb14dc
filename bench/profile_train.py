"""Where a tuneforge LoRA training step spends its time, and which step variant is faster.

Uses tuneforge's own pieces (LoRA wrapping, tokenisation, packing, the loss, the optimizer) on the
benchmark's data. Default mode: a warm-up step, then ``--steps`` profiled optimizer steps; prints the
operators by self CPU time, the forward time by module kind (attention, MLP, LoRA linears, norms, the
chunked loss: ``module::`` rows, inclusive of their children) and the optimizer, and the share that goes
to matrix multiplication (the part the matmul peak measures).

``--ab``: the step variants timed against each other in one process, alternated round by round (on a
shared machine the load drifts; alternating puts the drift on every variant alike): PEFT's LoRA layers
vs tuneforge's fused ones (``train/fast_lora.py``), and AdamW foreach vs fused. Prints the median step
time of each and its ratio to the first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::baddbmm")
# Module class name fragments -> the kind reported (first match wins).
MODULE_KINDS = (("Lora", "lora linear"), ("Attention", "attention"), ("MLP", "mlp"), ("RMSNorm", "norm"),
                ("Rotary", "rotary"), ("Embedding", "embedding"))


def module_kind(module) -> str | None:
    name = type(module).__name__
    return next((kind for frag, kind in MODULE_KINDS if frag in name), None)


def label_modules(model) -> None:
    """Wrap each module of a known kind in a ``module::<kind>`` profiler range (forward only)."""
    import torch

    def pre(module, _inputs):
        module._tf_range = torch.autograd.profiler.record_function(f"module::{module._tf_kind}")
        module._tf_range.__enter__()

    def post(module, _inputs, _output):
        module._tf_range.__exit__(None, None, None)

    for m in model.modules():
        kind = module_kind(m)
        if kind is not None:
            m._tf_kind = kind
            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post)


def setup(threads: int | None, dtype: str | None = None):
    import torch

    from bench.data import write_splits
    from bench.train_workers import MODEL, SETTINGS
    from tuneforge.config import load_recipe
    from tuneforge.models import load_model, load_tokenizer
    from tuneforge.train.data import tokenize_file
    from tuneforge.train.methods import apply_method
    from tuneforge.train.packing import make_rows

    if threads:
        torch.set_num_threads(threads)
    lc = SETTINGS["lora"]
    recipe = load_recipe(None, {"train.max_length": SETTINGS["max_length"], "train.lora.r": lc["r"],
                                "train.lora.alpha": lc["alpha"], "train.lora.dropout": lc["dropout"],
                                "train.lora.target_modules": lc["target_modules"]})
    tok = load_tokenizer(MODEL)
    model = apply_method(load_model(MODEL, is_trainable=True, dtype=dtype), recipe.train, tok)
    model.train()
    with tempfile.TemporaryDirectory() as tmp:
        train_file, _ = write_splits(Path(tmp), 64, 1)
        examples = tokenize_file(tok, train_file, SETTINGS["max_length"])
    rows = make_rows(examples, SETTINGS["max_length"], packing=True)
    return recipe, tok, model, examples, rows


def make_step(model, opt, examples, rows, n_rows: int, pad_id: int):
    import torch

    from tuneforge.train.packing import collate
    from tuneforge.train.steps import loss_sum

    def step(i: int) -> int:
        b = collate(examples, rows[(i * n_rows) % len(rows):][:n_rows], pad_id)
        loss = loss_sum(model, b) / max(b.n_target, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        with torch.autograd.profiler.record_function("optimizer"):
            opt.step()
        opt.zero_grad(set_to_none=True)
        return b.n_tokens

    return step


def set_lora_class(model, fast: bool) -> None:
    from peft.tuners.lora.layer import Linear as PeftLoraLinear

    from tuneforge.train.fast_lora import FastLoraLinear

    for m in model.modules():
        if isinstance(m, PeftLoraLinear):
            m.__class__ = FastLoraLinear if fast else PeftLoraLinear


def profile_steps(a) -> None:
    from torch.profiler import ProfilerActivity, profile

    from tuneforge.train.schedule import make_optimizer

    recipe, tok, model, examples, rows = setup(a.threads, a.dtype)
    label_modules(model)
    step = make_step(model, make_optimizer(model, recipe.train), examples, rows, a.rows, tok.pad_token_id)
    step(0)
    t0 = time.perf_counter()
    tokens = 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(1, a.steps + 1):
            tokens += step(i)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    ops = [e for e in events if not e.key.startswith(("module::", "optimizer", "autograd::", "torch::autograd"))]
    ops.sort(key=lambda e: -e.self_cpu_time_total)
    print("operator (self CPU time)                          share   calls")
    for e in ops[:20]:
        print(f"{e.key[:48]:48s} {100 * e.self_cpu_time_total / total:6.1f}% {e.count:7d}")
    print("\nforward by module kind (inclusive CPU time; backward is not attributed) and the optimizer")
    for e in sorted((e for e in events if e.key.startswith("module::") or e.key == "optimizer"),
                    key=lambda e: -e.cpu_time_total):
        print(f"{e.key:48s} {100 * e.cpu_time_total / total:6.1f}% {e.count:7d}")
    print(f"\n{tokens} tokens in {wall:.1f} s ({tokens / wall:.0f} tokens/s under the profiler); "
          f"matmul ops {100 * mm / max(total, 1):.1f}% of self CPU time")


def ab(a) -> None:
    import torch

    from tuneforge.train.schedule import make_optimizer

    recipe, tok, model, examples, rows = setup(a.threads, a.dtype)
    foreach = make_optimizer(model, recipe.train)
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in foreach.param_groups]
    fused = torch.optim.AdamW(groups, lr=recipe.train.learning_rate, betas=tuple(recipe.train.adam_betas), fused=True)
    variants = {  # name -> (fused LoRA layers, optimizer)
        "PEFT LoRA, AdamW foreach": (False, foreach),
        "fused LoRA, AdamW foreach": (True, foreach),
        "fused LoRA, AdamW fused": (True, fused),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}  # process CPU seconds: less sensitive to the load
    for rnd in range(a.rounds + 1):  # round 0 warms every variant up and is not counted
        order = list(variants) if rnd % 2 == 0 else list(variants)[::-1]
        for name in order:
            fast, opt = variants[name]
            set_lora_class(model, fast)
            step = make_step(model, opt, examples, rows, a.rows, tok.pad_token_id)
            t0, c0 = time.perf_counter(), time.process_time()
            step(rnd % 4)  # every variant trains on the same batch in a round
            if rnd:
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    first, first_cpu = (statistics.median(d[next(iter(variants))]) for d in (times, cpu))
    for name, ts in times.items():
        med, med_cpu = statistics.median(ts), statistics.median(cpu[name])
        print(f"{name:28s} median step {med:6.2f} s wall (min {min(ts):.2f}, max {max(ts):.2f}), "
              f"{med_cpu:6.2f} CPU-s; speed x first: wall {first / med:.2f}, CPU {first_cpu / med_cpu:.2f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Profile tuneforge LoRA training steps on the benchmark data.")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rows", type=int, default=1, help="packed rows per step")
    p.add_argument("--threads", type=int)
    p.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="the frozen base's weights (model.dtype; adapters stay float32)")
    p.add_argument("--ab", action="store_true", help="time step variants against each other, alternated")
    p.add_argument("--rounds", type=int, default=4, help="timed rounds of --ab")
    a = p.parse_args(argv)
    (ab if a.ab else profile_steps)(a)


if __name__ == "__main__":
    main()
