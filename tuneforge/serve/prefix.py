"""Prompt prefixes already computed: a new prompt that starts like a recent one skips those tokens.

Chat requests start with the same template turns (SmolLM2's system turn and the user tag are 30 of a
typical 48-token prompt), and a prompt's keys and values at positions 0..m-1 depend only on its first m
tokens (and the adapter). So after a prefill the engine keeps the keys and values of the last prompt
of each adapter (up to ``max_tokens``), and a new row copies the longest common prefix from there
into its cache slot (``SlotCache.write_prefix``) and computes only the rest. Prefill is
compute-bound on a CPU, so this cuts time to first token and the prefill share of every request, as
llama.cpp's server does with its prompt cache.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass
class Prefix:
    ids: list[int]
    keys: list[torch.Tensor]  # per layer [kv_heads, len(ids), head_dim]
    values: list[torch.Tensor]


class PrefixStore:
    def __init__(self, min_tokens: int = 8, max_tokens: int = 1024, adapters: int = 4) -> None:
        self.min_tokens = min_tokens  # below this, copying is not worth the bookkeeping
        self.max_tokens = max_tokens  # a long prompt's tail is unlikely to be shared: keep its head only
        self.adapters = adapters  # at most this many adapters' prefixes kept (least recently used dropped)
        self._by_adapter: OrderedDict[str | None, Prefix] = OrderedDict()

    def match(self, adapter: str | None, ids: list[int]) -> tuple[int, Prefix | None]:
        """(tokens to reuse, stored prefix): the common prefix with the adapter's last prompt, leaving at
        least one token to compute (its logits give the first answer token); (0, None) if too short."""
        prefix = self._by_adapter.get(adapter)
        if prefix is None:
            return 0, None
        limit = min(len(prefix.ids), len(ids) - 1)
        n = 0
        while n < limit and prefix.ids[n] == ids[n]:
            n += 1
        if n < self.min_tokens:
            return 0, None
        self._by_adapter.move_to_end(adapter)
        return n, prefix

    def put(self, adapter: str | None, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self._by_adapter[adapter] = Prefix(list(ids), keys, values)
        self._by_adapter.move_to_end(adapter)
        while len(self._by_adapter) > self.adapters:
            self._by_adapter.popitem(last=False)

    def clear(self) -> None:
        self._by_adapter.clear()
