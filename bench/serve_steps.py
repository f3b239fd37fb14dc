"""What continuous batching can gain at most here: the engine's own costs, in CPU time, without HTTP.

``bench.serve`` measures whole requests through the server. This measures what a request
costs the engine, in thread CPU time (so other work on a shared machine does not count): its
**prefill** alone ``P`` (the prompt's tokens after the reused template prefix; what a request costs on
an idle server), its **join** ``J(C)`` (the extra cost of a decoding step of ``C - 1`` running rows that
also computes its prompt: how a request joins a busy server), and the **decoding steps** ``D(C)`` (one
step for all ``C`` rows, mid-answer). A request of ``N`` answer tokens costs ``P + N x D(1)`` at one
client and ``J(C) + N x D(C) / C`` among ``C``, so the most batching can gain is

    ceiling(C) = (P + N x D(1)) / (J(C) + N x D(C) / C)

Prompts are compute-bound: they cost about the same per request at any client count, and with short
answers they are a large share of all the work, which caps the ratio however well the steps batch.
The ratio decoding steps alone reach, ``C x D(1) / D(C)``, is printed beside it.

    python -m bench.serve_steps   # fp32 (packed and plain weights), bf16 (native bf16 CPUs), int8; answers of 24 and 64 tokens

A second table times a burst of 1, 8 and 32 prompts on an idle engine both ways the scheduler can compute
it: padded groups of similar lengths (a forward each) or one flat forward (``scheduler.FLAT_TOKENS``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench import common
from bench.data import length_mix

MODEL = "smollm2-135m-instruct"
ROWS = (1, 8, 32)
ANSWERS = (24, 64)  # bench.serve's max_tokens at its small and full sizes


def _prompts(tokenizer, n: int) -> list[list[int]]:
    pool = [r["messages"][:-1] for r in length_mix(n, seed=2)]  # bench.serve's requests
    texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in pool]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def silent_row(prompt_ids: list[int]):
    """A request whose output goes nowhere, long enough never to finish during a measurement."""
    from tuneforge.serve.rows import Row

    return Row(prompt_ids=list(prompt_ids), adapter=None, max_tokens=10_000, emit=lambda kind, payload: None)


def mid_answer_batch(engine, prompts: list[list[int]], rows: int):
    """A batch of ``rows`` running rows (prompts reused in turn) whose caches hold prompt + 24 tokens."""
    from tuneforge.serve.scheduler import Batch

    batch = Batch(engine)
    batch._prefill([silent_row(prompts[i % len(prompts)]) for i in range(rows)])
    for _ in range(24):
        batch._decode()
    return batch


def serving_engine(model_name: str, pack: bool = True, dtype: str = "auto"):
    """The serving engine on ``model_name`` with room for ``ROWS``' largest batch; ``pack=False``: float32
    layers through plain ``F.linear`` instead of oneDNN's prepacked weights (``tuneforge.serve.packed``), as
    served before them; ``dtype``: the weights' (``tuneforge serve --dtype``)."""
    import tuneforge.config as C
    from tuneforge.serve.engine import Engine
    from tuneforge.serve.server import load_base

    model, tok = load_base(C.ModelConfig(name=model_name, dtype=dtype))
    return Engine(model, tok, max_batch=max(ROWS), **({} if pack else {"pack_weights": None}))


def step_costs(engine, prompts: int = 16, steps: int = 5) -> dict[str, Any]:
    """Thread CPU ms of one request's prefill (mean over ``prompts``, prefix store warm) and of one decoding
    step at each of ``ROWS`` (best of 3 x ``steps``)."""
    import torch

    from tuneforge.serve.scheduler import Batch

    engine.eos_ids = frozenset()  # rows must keep decoding for the whole measurement, whatever they say
    ids = _prompts(engine.tokenizer, prompts + 1)

    out: dict[str, Any] = {}
    with torch.inference_mode():
        batch = Batch(engine)
        batch._prefill([silent_row(ids[0])])  # warm-up, and the template prefix is stored
        cost = 0.0
        for p in ids[1:]:
            t = time.thread_time()
            batch._prefill([silent_row(p)])
            cost += time.thread_time() - t
            batch.reset(keep_minimum=True)  # as when the engine's batch drains
        out["prompt tokens"] = sum(len(p) for p in ids[1:]) / prompts
        out["prefill ms"] = 1e3 * cost / prompts
        for n in ROWS:
            batch = mid_answer_batch(engine, ids, n)
            best = float("inf")
            for _ in range(3):
                t = time.thread_time()
                for _ in range(steps):
                    batch._decode()
                best = min(best, (time.thread_time() - t) / steps)
            out[f"step ms at {n}"] = 1e3 * best
            if n > 1:  # one more row joins n - 1 running rows: a mixed step, less the plain step of n rows
                batch.live.pop()
                joins = []
                for p in ids[1 : 1 + steps]:
                    t = time.thread_time()
                    batch.step([silent_row(p)])
                    joins.append(time.thread_time() - t)
                    batch.live.pop()
                out[f"join ms at {n}"] = 1e3 * sorted(joins)[len(joins) // 2] - out[f"step ms at {n}"]
            batch.reset()
    return out


def burst_costs(engine, sizes: tuple[int, ...] = (1, 8, 32), rounds: int = 5) -> list[dict[str, Any]]:
    """Thread CPU ms to compute a burst of ``n`` new prompts on an idle engine (its prefix store holding only
    the chat template's tokens in common with them), both ways the scheduler can: the padded path
    (``Batch._prefill``: groups of similar lengths, each left-padded and its own forward) and one flat forward
    (``Batch._mixed``, what it does for up to ``FLAT_TOKENS`` prompt tokens of one adapter since 2026-12-04),
    alternated round by round, median."""
    import statistics

    import torch

    from tuneforge.serve.scheduler import Batch

    ids = _prompts(engine.tokenizer, 2 * max(sizes) + 1)
    out = []
    with torch.inference_mode():
        batch = Batch(engine)

        def template_only() -> None:
            """The prefix store holds a prompt that shares only the chat template with the burst's: one
            variant must not find the other's last prompt there and skip nearly all of it."""
            batch._prefill([silent_row(ids[0])])
            batch.reset(keep_minimum=True)

        for n in sizes:
            times: dict[str, list[float]] = {"padded": [], "flat": []}
            for r in range(rounds + 1):  # round 0 warms both up and is not counted
                prompts = ids[1 + (r % 2) * n:][:n]
                for how in ("padded", "flat") if r % 2 else ("flat", "padded"):
                    template_only()
                    t = time.thread_time()
                    (batch._prefill if how == "padded" else batch._mixed)([silent_row(p) for p in prompts])
                    if r:
                        times[how].append(time.thread_time() - t)
                    batch.reset(keep_minimum=True)
            padded, flat = (1e3 * statistics.median(times[k]) for k in ("padded", "flat"))
            first, last = _scheduler_burst(engine, batch, ids[1:1 + n], rounds, template_only)
            out.append({"burst": n, "padded ms": padded, "flat ms": flat, "flat x padded": padded / flat,
                        "scheduler: median first token ms": first, "scheduler: last first token ms": last})
    return out


def _scheduler_burst(engine, batch, prompts: list[list[int]], rounds: int,
                     template_only: Callable[[], None]) -> tuple[float, float]:
    """What the scheduler itself does with the burst (``Batch.step``, ``FLAT_TOKENS`` chunks, the earlier
    chunks' rows decoding in the later forwards): thread CPU ms until the median row and the last row have
    their first token, median over ``rounds``."""
    import statistics

    from tuneforge.serve.rows import Row

    medians, lasts = [], []
    saved, engine.eos_ids = engine.eos_ids, frozenset()  # no row may finish before every first token
    try:
        for _ in range(rounds):
            template_only()
            firsts: dict[int, float] = {}
            t0 = time.thread_time()

            def emit_for(i: int, firsts=firsts, t0=t0):
                return lambda kind, _p: firsts.setdefault(i, time.thread_time() - t0) if kind == "delta" else None

            batch.step([Row(prompt_ids=list(p), adapter=None, max_tokens=10_000, emit=emit_for(i))
                        for i, p in enumerate(prompts)])
            while len(firsts) < len(prompts):
                batch.step([])
            medians.append(statistics.median(firsts.values()))
            lasts.append(max(firsts.values()))
            batch.reset(keep_minimum=True)
    finally:
        engine.eos_ids = saved
    return 1e3 * statistics.median(medians), 1e3 * statistics.median(lasts)


def ceilings(costs: dict[str, Any], answer: int) -> dict[str, float]:
    """The most batching can gain at each client count for answers of ``answer`` tokens (formula above)."""
    p, d1 = costs["prefill ms"], costs["step ms at 1"]
    one = p + answer * d1
    out = {}
    for n in ROWS[1:]:
        dn, jn = costs[f"step ms at {n}"], costs[f"join ms at {n}"]
        out[f"ceiling x at {n}"] = one / (jn + answer * dn / n)
        out[f"steps alone x at {n}"] = n * d1 / dn
    out["join share at 8 %"] = 100 * costs["join ms at 8"] / (costs["join ms at 8"] + answer * costs["step ms at 8"] / 8)
    return out


def run(write: bool = True) -> common.Report:
    import torch

    from bench.serve import int8_folder
    from tuneforge.models import native_bf16
    from tuneforge.serve.packed import min_weights
    from tuneforge.serve.scheduler import FLAT_TOKENS

    torch.set_num_threads(1)  # as bench.serve runs its servers (--threads 1)
    report = common.Report(name="serve-steps", title="Serving: what batching can gain at most (engine CPU time)",
                           size="small", command="python -m bench.serve_steps")
    rows = []
    modes = [("fp32", MODEL, True, "float32"), ("fp32, plain F.linear (before packed weights)", MODEL, False, "float32"),
             ("int8 export", str(int8_folder()), True, "auto")]
    if native_bf16():  # elsewhere bfloat16 is emulated, slower than float32: not a mode to serve
        modes.insert(2, ("bf16 (--dtype bfloat16)", MODEL, True, "bfloat16"))
    bursts = []
    for label, name, pack, dtype in modes:
        print(f"bench.serve_steps: measuring {label}", flush=True)
        engine = serving_engine(name, pack=pack, dtype=dtype)
        costs = step_costs(engine)
        for answer in ANSWERS:
            rows.append({"mode": label, "answer tokens": answer, **costs, **ceilings(costs, answer)})
        if pack:  # the scheduler's two ways of computing a burst, on the weights as served
            bursts += [{"mode": label, **b} for b in burst_costs(engine)]
    cpu = torch.backends.cpu.get_cpu_capability()
    fp32_packed = ("every Linear layer" if min_weights()[torch.float32] == 0
                   else "its large Linear layers (MLP, head)")
    report.setup = [
        "in-process, no HTTP: the engine's scheduler (`tuneforge.serve.scheduler.Batch`) on the bundled model, torch "
        "threads 1, thread CPU time; prefill = one request on an idle engine, its prompt after the reused template "
        "prefix, mean over 16 of bench.serve's requests; step = one decoding step for all rows, caches mid-answer, "
        "best of 3; join = a step of C - 1 running rows that also computes a new prompt, less a plain step of C "
        "rows (median of 5)",
        "ceiling x at C = (prefill + N x step(1)) / (join(C) + N x step(C) / C) for answers of N tokens: the most "
        "any scheduling can gain over one client at a time with these costs; steps alone x = C x step(1) / step(C)",
        f"fp32 serves {fp32_packed} from oneDNN's prepacked weights (`tuneforge.serve.packed`, by the CPU's "
        f"kernels: {cpu}); the plain row is the same model through `F.linear` (MKL) only, as served before, "
        "measured in the same run",
        "bf16: the same model with `--dtype bfloat16`, every Linear prepacked (oneDNN's native bfloat16 GEMM): "
        + ("measured" if native_bf16() else "**not measured**, this CPU has no native bfloat16 (AVX512-BF16, AMX)"),
    ]
    cols = ["mode", "answer tokens", "prompt tokens", "prefill ms", *(f"step ms at {n}" for n in ROWS),
            "join ms at 8", "join ms at 32", "steps alone x at 8", "ceiling x at 8", "steps alone x at 32",
            "ceiling x at 32", "join share at 8 %"]
    report.tables.append(common.table(rows, cols))
    report.setup.append(
        "burst = n of bench.serve's prompts arriving together at an idle engine, computed the two ways the "
        "scheduler can: padded (`Batch._prefill`: groups of similar lengths, each left-padded, a forward each) "
        "and flat (`Batch._mixed`: one forward over all their tokens, the scheduler's choice for up to "
        "`FLAT_TOKENS` prompt tokens of one adapter, not for one prompt alone); thread CPU ms, median of 5 "
        "alternated rounds; scheduler: the burst given to `Batch.step` as the engine does (flat forwards of at "
        "most `FLAT_TOKENS` = " + str(FLAT_TOKENS) + " prompt tokens, the earlier ones' rows decoding in the "
        "later ones), thread CPU ms until the median and the last row had their first token")
    report.tables.append(common.table(bursts, ["mode", "burst", "padded ms", "flat ms", "flat x padded",
                                               "scheduler: median first token ms", "scheduler: last first token ms"]))
    common.finish(report, write=write)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="The engine's prefill and decoding-step costs, and the batching "
                                "gain they allow at 8 and 32 clients.")
    p.add_argument("--no-write", action="store_true", help="print the table but leave BENCHMARKS.md alone")
    run(write=not p.parse_args(argv).no_write)


if __name__ == "__main__":
    main()
