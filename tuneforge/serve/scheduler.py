"""Iteration-level (continuous) batching: the rows the engine is generating, one forward per step.

Every iteration of the engine's worker calls :meth:`Batch.step` with the rows that were admitted since
the last one. New rows of one adapter (the running rows' too) are computed as one flat sequence, without
padding: their prompts and the running rows' next tokens in one forward, so the weights are read once for
all of them (``SlotCache.plan_mixed``, ``slot_attention``; at 8 rows on the 2-core CPU a join costs about a
fifth of a prefill of its own, ``python -m bench.serve_steps``), a burst on an idle engine included
(``FLAT_TOKENS`` prompt tokens a forward). Otherwise (rows of several adapters, a prompt over that bound, a
model type ``slot_attention`` does not serve) new rows are prefilled in forwards of their own, grouped by
length and left-padded to the longest of each group, and then every running row decodes one token
together.
A row that finishes, times out or whose client has gone leaves the batch before the next step, and
its slot goes to the last running row (see ``kv_cache``), so nothing waits for a batch to drain and
nothing is re-padded when rows come and go.

Adapters: rows of plain-LoRA adapters and of the base model share one forward (PEFT's mixed batches,
``adapter_names=``); an adapter PEFT cannot mix (DoRA, other tuners) decodes its rows in its own
forward in the same iteration, so every adapter advances one token per iteration and none starves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from tuneforge.serve.kv_cache import SlotCache
from tuneforge.serve.prefix import Prefix, PrefixStore
from tuneforge.serve.rows import Row
from tuneforge.serve.slot_attention import PLAN
from tuneforge.serve.textstream import TextStream


class Engine(Protocol):
    """What a batch uses of the engine that owns it (``tuneforge.serve.engine.Engine``); a protocol, so the
    scheduler does not import the engine that imports it."""

    model: Any
    tokenizer: Any
    max_batch: int
    mixed_steps: bool
    stats: dict[str, int]
    eos_ids: frozenset[int]
    pad_id: int

    def group_of(self, row: Row) -> str: ...
    def adapter_forward(self, names: list[str | None]) -> tuple[Any, dict[str, Any]]: ...
    def _count_dropped(self, n: int) -> None: ...
    def _finish(self, row: Row, kind: str, payload: Any) -> None: ...

MIXED = "__mixed__"  # group key of the rows that can share one forward
# Prompt tokens in one flat forward at most (a burst beyond it takes several, each with the rows already
# running). Flat, a burst of prompts is computed without padding and with one read of the weights: on one
# Zen 4 thread (``python -m bench.serve_steps``, thread CPU), 8 of bench.serve's prompts 578 -> 522 ms fp32
# (303 -> 272 bf16), 32 of them 2,012 -> 1,651 ms (1,097 -> 953) against the padded groups of ``_prefill``.
# Cut at 1,024 tokens, the 32 take two forwards, the first chunk's rows decoding in the second: the median
# row's first token comes at 1,090 ms instead of 1,632, the last at 1,632 as in one forward (at 512 tokens:
# 1,033 and 1,825), fp32. The bound also keeps a long prompt's own attention scores (``slot_attention``:
# [heads x tokens x tokens] in float32, ~38 MB at 1,024 tokens) in check.
FLAT_TOKENS = 1024


@dataclass(eq=False)
class Live:
    """A row being generated: its text stream, sampling generator and last sampled token."""

    row: Row
    stream: TextStream
    generator: torch.Generator
    token: int = -1


class Batch:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        config = engine.model.config
        self.cache = SlotCache(config.num_hidden_layers, engine.max_batch)
        self.prefixes = PrefixStore()
        self.live: list[Live] = []  # live[i] owns cache slot i

    @property
    def rows(self) -> list[Row]:
        return [lv.row for lv in self.live]

    def reset(self, keep_minimum: bool = False) -> None:
        """Drop every row and the whole cache (after a failed step: nothing it holds is trusted), or, with
        ``keep_minimum``, leave the cache as a drained batch does (``SlotCache.release``)."""
        self.live = []
        self.cache.release(keep_minimum)

    # -- one iteration ---------------------------------------------------------------------------

    def step(self, new: list[Row]) -> None:
        with torch.inference_mode():  # the cache's tensors are inference tensors: every write must be too
            self._step(new)

    def _step(self, new: list[Row]) -> None:
        stats = self.engine.stats
        fresh = [r for r in new if not r.cancelled.is_set()]
        self.engine._count_dropped(len(new) - len(fresh))
        chunks = self._flat_chunks(fresh)
        if chunks:
            for chunk in chunks:  # each chunk's prompts in one flat forward, with the running rows' next tokens
                if self.live:
                    stats["joined_running"] += len(chunk)
                    stats["joined_in_step"] += len(chunk)
                    stats["steps"] += 1
                stats["max_rows_in_batch"] = max(stats["max_rows_in_batch"], len(self.live) + len(chunk))
                self._mixed(chunk)
        else:
            if fresh:
                if self.live:
                    stats["joined_running"] += len(fresh)
                self._prefill(fresh)
            if self.live:
                stats["steps"] += 1
                stats["max_rows_in_batch"] = max(stats["max_rows_in_batch"], len(self.live))
                self._decode()
        if not self.live:
            self.cache.release()

    def _flat_chunks(self, rows: list[Row]) -> list[list[Row]]:
        """New rows cut into flat forwards (``_mixed``) of at most ``FLAT_TOKENS`` prompt tokens each, in
        arrival order; [] where they take the padded path (``_prefill``): mixed forwards are off for this
        model, the rows (running ones included) are of more than one adapter, a prompt alone is longer
        than the bound (its own slot attention would hold ``[heads x tokens x tokens]`` scores; SDPA's
        kernel in ``_prefill`` does not), or one prompt comes to an idle engine (nothing to share a forward
        with, and SDPA's kernel is as quick: 107 vs 107 ms fp32, 64 vs 66 ms bf16, 30 alternated rounds)."""
        if not rows or not self.engine.mixed_steps or (len(rows) == 1 and not self.live):
            return []
        if len({lv.row.adapter for lv in self.live} | {r.adapter for r in rows}) != 1:
            return []
        if any(len(r.prompt_ids) > FLAT_TOKENS for r in rows):
            return []
        chunks: list[list[Row]] = [[]]
        tokens = 0
        for r in rows:
            if chunks[-1] and tokens + len(r.prompt_ids) > FLAT_TOKENS:
                chunks.append([])
                tokens = 0
            chunks[-1].append(r)
            tokens += len(r.prompt_ids)
        return chunks

    def _prefill(self, rows: list[Row]) -> None:
        engine = self.engine
        engine.stats["batches"] += 1
        engine.stats["rows"] += len(rows)
        reuse = {r: self.prefixes.match(r.adapter, r.prompt_ids) for r in rows}
        engine.stats["prefix_tokens_reused"] += sum(n for n, _ in reuse.values())
        for same_adapters in _groups(rows, engine.group_of).values():
            for group in _by_length(same_adapters, lambda r: len(r.prompt_ids) - reuse[r][0]):
                self._prefill_group(group, reuse)
        self._leave()

    def _prefill_group(self, group: list[Row], reuse: dict[Row, tuple[int, Prefix | None]]) -> None:
        """One forward over new rows whose tokens still to compute (after a reused prefix) are of similar
        lengths, left-padded to the longest of them."""
        engine = self.engine
        first = len(self.live)
        self.live.extend(Live(r, TextStream(engine.tokenizer, r.stop, r.max_tokens, engine.eos_ids),
                              _generator(r.seed)) for r in group)
        slots = list(range(first, len(self.live)))
        skip = [reuse[r][0] for r in group]
        width = max(len(r.prompt_ids) - m for r, m in zip(group, skip, strict=True))
        ids = torch.full((len(group), width), engine.pad_id, dtype=torch.long)
        for i, (r, m) in enumerate(zip(group, skip, strict=True)):
            ids[i, width - len(r.prompt_ids) + m:] = torch.tensor(r.prompt_ids[m:])
        positions, mask = self.cache.plan_prefill(slots, [len(r.prompt_ids) for r in group], skip)
        for slot, r, m in zip(slots, group, skip, strict=True):
            if m:
                prefix = reuse[r][1]
                self.cache.write_prefix(slot, prefix.keys, prefix.values, m)
        logits = self._forward(group, ids, positions, mask)
        last = group[-1]  # the next prompts of this adapter will likely start like this one
        n = min(len(last.prompt_ids), self.prefixes.max_tokens)
        self.prefixes.put(last.adapter, last.prompt_ids[:n], *self.cache.read_prefix(slots[-1], n))
        self._sample(slots, logits)

    def _mixed(self, rows: list[Row]) -> None:
        """New rows join the running ones (all of one adapter) in one flat forward: the running rows decode
        their next token while the new rows' prompts are computed (after any reused prefix)."""
        engine = self.engine
        engine.stats["batches"] += 1
        engine.stats["rows"] += len(rows)
        reuse = {r: self.prefixes.match(r.adapter, r.prompt_ids) for r in rows}
        engine.stats["prefix_tokens_reused"] += sum(n for n, _ in reuse.values())
        running = list(range(len(self.live)))
        tokens = [self.live[s].token for s in running]
        self.live.extend(Live(r, TextStream(engine.tokenizer, r.stop, r.max_tokens, engine.eos_ids),
                              _generator(r.seed)) for r in rows)
        joining = list(range(len(running), len(self.live)))
        skip = [reuse[r][0] for r in rows]
        positions, mask, plan = self.cache.plan_mixed(running, joining, [len(r.prompt_ids) for r in rows], skip)
        last = [*range(len(running))]  # index in the flat sequence of each row's last token
        for slot, r, m in zip(joining, rows, skip, strict=True):
            if m:
                self.cache.write_prefix(slot, reuse[r][1].keys, reuse[r][1].values, m)
            tokens += r.prompt_ids[m:]
            last.append(len(tokens) - 1)
        ctx, extra = engine.adapter_forward([rows[0].adapter])
        device = engine.model.device
        token = PLAN.set(plan)  # slot_attention: each token attends to its own slot
        try:
            with ctx:
                out = engine.model(input_ids=torch.tensor([tokens], device=device), attention_mask=mask.to(device),
                                   position_ids=positions.to(device), cache=self.cache, use_cache=True,
                                   logits_to_keep=torch.tensor(last, device=device), **extra)
        finally:
            PLAN.reset(token)
        n = min(len(rows[-1].prompt_ids), self.prefixes.max_tokens)
        self.prefixes.put(rows[-1].adapter, rows[-1].prompt_ids[:n], *self.cache.read_prefix(joining[-1], n))
        self._sample([*running, *joining], out.logits[0].float().cpu())
        self._leave()

    def _decode(self) -> None:
        by_group = _groups(range(len(self.live)), lambda s: self.engine.group_of(self.live[s].row))
        for slots in by_group.values():
            rows = [self.live[s].row for s in slots]
            ids = torch.tensor([[self.live[s].token] for s in slots])
            positions, mask = self.cache.plan_decode(slots)
            self._sample(slots, self._forward(rows, ids, positions, mask))
        self._leave()

    def _forward(self, rows: list[Row], ids: torch.Tensor, positions: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
        engine = self.engine
        ctx, extra = engine.adapter_forward([r.adapter for r in rows])
        device = engine.model.device
        with ctx:
            out = engine.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device), cache=self.cache, use_cache=True,
                               logits_to_keep=1, **extra)
        return out.logits[:, -1, :].float().cpu()

    # -- sampling and leaving --------------------------------------------------------------------

    def _sample(self, slots: list[int], logits: torch.Tensor) -> None:
        """Pick each row's next token and send its text; rows that are done are marked to leave."""
        engine = self.engine
        now = time.monotonic()
        for b, s in enumerate(slots):
            lv = self.live[s]
            row, stream = lv.row, lv.stream
            if row.cancelled.is_set():
                engine._count_dropped(1)
                lv.token = -1
                continue
            if now > row.deadline:
                engine._finish(row, "error", "timeout")
                lv.token = -1
                continue
            token = _pick(logits[b], row.temperature, row.top_p, lv.generator)
            piece = stream.push(token)
            if piece:
                row.emit("delta", piece)
            if stream.finish_reason is not None:
                extra = 1 if stream.finish_reason == "stop" and token in engine.eos_ids else 0
                engine._finish(row, "done", {"finish_reason": stream.finish_reason,
                                             "prompt_tokens": len(row.prompt_ids),
                                             "completion_tokens": len(stream.ids) + extra})
                lv.token = -1
                continue
            lv.token = token

    def _leave(self) -> None:
        """Rows marked to leave (token -1) give their slot to the last running row, highest slot first."""
        for s in range(len(self.live) - 1, -1, -1):
            if self.live[s].token != -1:
                continue
            last = len(self.live) - 1
            if s != last:
                self.cache.move(last, s)
                self.live[s] = self.live[last]
            self.live.pop()


def _groups(items, key: Callable[[Any], str]) -> dict[str, list]:
    """Items split by ``key``, each group in arrival order."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _by_length(rows: list[Row], length: Callable[[Row], int], waste: float = 1.25) -> list[list[Row]]:
    """Rows sorted by tokens to compute and cut into prefill groups whose padded size stays within ``waste``
    times their real tokens: one long prompt must not make a burst of short ones compute its length."""
    groups: list[list[Row]] = []
    total = 0
    for r in sorted(rows, key=length):
        n = length(r)
        if groups and (len(groups[-1]) + 1) * n <= waste * (total + n):
            groups[-1].append(r)
            total += n
        else:
            groups.append([r])
            total = n
    return groups


def _generator(seed: int | None) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return g


def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """Greedy at temperature 0, else nucleus sampling with the row's own generator (reproducible by seed)."""
    if temperature < 1e-4:  # below this, sampling is greedy anyway (and tiny values overflow to NaN)
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        cut = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        sorted_probs[cut] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
