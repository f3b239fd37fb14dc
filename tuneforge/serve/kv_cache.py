"""A preallocated KV cache with one slot per running row, for iteration-level (continuous) batching.

Each layer keeps keys and values as ``[slots, kv_heads, capacity, head_dim]``. A row owns one slot
for its whole life: its prompt is written there at prefill, then one column per decoding step. Rows
have their own extent (``start`` .. ``end``) in the time axis, so rows of different lengths share a
step without padding anything: an attention mask (built per forward) lets each query see only its own
row's columns. A row that joins writes into a free slot; a row that leaves hands its slot to the last
running row (one row's cache copied, never the whole batch), so running rows stay in slots
``0 .. n-1`` and a decoding step reads the cache as a view, without gathering.

The object is handed to a transformers model as ``cache=``; the model calls :meth:`update` once per
layer with the new keys and values and attends over what it returns. Before each forward, a plan
(:meth:`plan_prefill`, :meth:`plan_decode` or :meth:`plan_mixed`) says which slots the batch rows are
and which columns their tokens go to.

A *mixed* forward (:meth:`plan_mixed`) carries the running rows' next tokens and new rows' prompts
together as one flat sequence ``[1, tokens]``: each token knows its slot and column, and
``slot_attention`` lets it attend to its own slot's columns up to itself. Prefill is compute-bound
and a decoding step is bound by reading the weights, so one forward that does both reads the weights
once for the two and multiplies larger matrices (on the 2-core CPU, fp32: a 20-token join plus a step of 8 rows 374 -> 242 ms
as plain forwards).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from tuneforge.serve.slot_attention import MixedPlan


class SlotCache:
    def __init__(self, n_layers: int, slots: int, capacity: int = 128) -> None:
        self.n_layers = n_layers
        self.slots = slots
        self.min_capacity = capacity
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.start = [0] * slots  # first column of the row's own tokens (its prompt is left-aligned to end)
        self.end = [0] * slots  # the next free column of the row
        self._rows: torch.Tensor | None = None  # slot index per batch row, [b, 1]
        self._cols: torch.Tensor | None = None  # column per batch row and query token, [b, q]
        self._view: slice | torch.Tensor = slice(0, 0)
        self._width = 0
        self._need = 0
        self._flat = False  # a mixed forward: one flat sequence of every row's tokens (plan_mixed)

    # -- the plan of one forward -----------------------------------------------------------------

    def plan_prefill(self, slots: list[int], lengths: list[int],
                     reused: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows with prompts of ``lengths`` go into ``slots``, right-aligned to one end column. The first
        ``reused[i]`` tokens of row i are not computed: their keys and values are written by
        :meth:`write_prefix` (a prompt prefix seen before); only the rest are queries, left-padded to the
        longest of them. Padding queries write into columns left of their row's start (never read).
        Returns (position_ids, attention mask) for the forward."""
        reused = reused or [0] * len(slots)
        suffix = [n - m for n, m in zip(lengths, reused, strict=True)]
        q = max(suffix)
        width = max(max(lengths), max(m + q for m in reused))  # room for every row's padding queries
        cols = torch.empty(len(slots), q, dtype=torch.long)
        for i, (slot, n, s) in enumerate(zip(slots, lengths, suffix, strict=True)):
            self.start[slot], self.end[slot] = width - n, width
            cols[i, : q - s] = torch.arange(q - s)
            cols[i, q - s :] = torch.arange(width - s, width)
        return self._plan(slots, cols)

    def write_prefix(self, slot: int, keys: list[torch.Tensor], values: list[torch.Tensor], n: int) -> None:
        """Put ``n`` tokens of a stored prefix (per layer ``[kv_heads, >= n, head_dim]``, from
        :meth:`read_prefix`) at the start of ``slot``'s row, planned by :meth:`plan_prefill`."""
        lo = self.start[slot]
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            store_k, store_v = self._storage(layer, k[None])
            store_k[slot, :, lo : lo + n] = k[:, :n]
            store_v[slot, :, lo : lo + n] = v[:, :n]

    def read_prefix(self, slot: int, n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of the first ``n`` tokens' keys and values of ``slot``'s row, per layer."""
        lo = self.start[slot]
        keys = [k[slot, :, lo : lo + n].clone() for k in self.keys if k is not None]
        values = [v[slot, :, lo : lo + n].clone() for v in self.values if v is not None]
        return keys, values

    def plan_decode(self, slots: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One new token per row, written at each row's own next column."""
        cols = torch.tensor([self.end[s] for s in slots])[:, None]
        for s in slots:
            self.end[s] += 1
        return self._plan(slots, cols)

    def plan_mixed(self, running: list[int], joining: list[int], lengths: list[int],
                   reused: list[int]) -> tuple[torch.Tensor, torch.Tensor, MixedPlan]:
        """One flat forward: first one token for each ``running`` slot (at its next column), then the prompt
        tokens of each ``joining`` slot after its ``reused`` prefix (the prompt at columns 0..length-1 of
        its slot; the prefix written by :meth:`write_prefix`). Slots must be 0..n-1 in that order.
        Returns (position_ids ``[1, tokens]``, attention mask ``[1, 1, tokens, width]`` over each token's
        own slot, where each token belongs) for ``slot_attention``."""
        from tuneforge.serve.slot_attention import MixedPlan

        slot_of, col_of, spans = [], [], []
        for s in running:
            slot_of.append(s)
            col_of.append(self.end[s])
            self.end[s] += 1
        for s, n, m in zip(joining, lengths, reused, strict=True):
            self.start[s], self.end[s] = 0, n
            spans.append((s, len(slot_of), len(slot_of) + n - m))
            slot_of += [s] * (n - m)
            col_of += range(m, n)
        slots = [*running, *joining]
        assert slots == list(range(len(slots))), "mixed forwards use slots 0..n-1"
        rows, cols = torch.tensor(slot_of), torch.tensor(col_of)
        starts = torch.tensor([self.start[s] for s in slots])[rows]
        width = int(cols.max()) + 1
        self._flat, self._width, self._need = True, width, width
        self._rows, self._cols, self._view = rows, cols, slice(0, len(slots))
        j = torch.arange(width)
        mask = (j >= starts[:, None]) & (j <= cols[:, None])
        return (cols - starts)[None], mask[None, None], MixedPlan(len(running), tuple(spans))

    def _plan(self, slots: list[int], cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._flat = False
        starts = torch.tensor([self.start[s] for s in slots])
        self._width = int(cols.max()) + 1
        self._need = self._width
        self._rows = torch.tensor(slots)[:, None]
        self._cols = cols
        contiguous = slots == list(range(slots[0], slots[0] + len(slots)))
        self._view = slice(slots[0], slots[0] + len(slots)) if contiguous else torch.tensor(slots)
        positions = (cols - starts[:, None]).clamp(min=0)
        j = torch.arange(self._width)
        # a query sees its own row's columns up to itself; a padding query sees itself only (so that
        # its softmax is not empty: its output is never read, but NaN would leak through the values)
        mask = ((j >= starts[:, None, None]) & (j <= cols[:, :, None])) | (j == cols[:, :, None])
        return positions, mask[:, None]  # [b, 1, q, width], True = attend

    # -- what the model calls --------------------------------------------------------------------

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self._storage(layer_idx, key)
        if self._flat:  # [1, heads, tokens, dim]: token t at (its slot, its column)
            keys[self._rows, :, self._cols] = key[0].transpose(0, 1)
            values[self._rows, :, self._cols] = value[0].transpose(0, 1)
            # per slot, [slots, heads, width, dim]: slot_attention picks each token's own slot
            return keys[self._view, :, : self._width], values[self._view, :, : self._width]
        keys[self._rows, :, self._cols] = key.permute(0, 2, 1, 3)  # [b, q, heads, dim] at (slot, column)
        values[self._rows, :, self._cols] = value.permute(0, 2, 1, 3)
        return keys[self._view, :, : self._width], values[self._view, :, : self._width]

    def _storage(self, layer: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``layer``'s tensors, allocated or grown to the planned width (``like``: [b, heads, t, dim])."""
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or keys.shape[2] < self._need:
            capacity = max(self.min_capacity, self._need, 2 * (keys.shape[2] if keys is not None else 0))
            shape = (self.slots, like.shape[1], capacity, like.shape[3])
            new_k = like.new_zeros(shape)
            new_v = like.new_zeros(shape)
            if keys is not None:  # growing: keep what the running rows wrote
                new_k[:, :, : keys.shape[2]] = keys
                new_v[:, :, : keys.shape[2]] = values
            self.keys[layer], self.values[layer] = keys, values = new_k, new_v
        return keys, values

    # -- rows leaving ----------------------------------------------------------------------------

    def move(self, src: int, dst: int) -> None:
        """Slot ``src``'s row now lives in ``dst`` (whose row has left): copy only that row's columns."""
        lo, hi = self.start[src], self.end[src]
        for keys, values in zip(self.keys, self.values, strict=True):
            if keys is not None:
                keys[dst, :, lo:hi] = keys[src, :, lo:hi]
                values[dst, :, lo:hi] = values[src, :, lo:hi]
        self.start[dst], self.end[dst] = lo, hi

    def release(self, keep_minimum: bool = True) -> None:
        """No row is running: give back what grew past ``min_capacity`` columns (a long answer must not keep a large
        cache alive), or everything (``keep_minimum=False``: after a failed forward, whose values are not
        trusted). Tensors of the minimum capacity stay for the next rows: allocating them is zeroing them, 189
        MB for SmolLM2-135M's 32 slots, a tenth of a prefill on an idle engine (one Zen 4 thread, median of 16
        prompts: 80 -> 72 ms on TCMalloc, the ``tuneforge`` command's allocator; 91 -> 76 ms on glibc's
        malloc, which page-faults fresh blocks in). What earlier rows wrote there is never attended to: every
        plan's mask covers only the columns its rows have written, and the rest are finite keys and values of
        the same model, which weigh exactly nothing masked out (as in a busy engine's slots, which rows hand
        on to each other without clearing them; a NaN would leak through SDPA's mask)."""
        if not keep_minimum or any(k is not None and k.shape[2] > self.min_capacity for k in self.keys):
            self.keys = [None] * self.n_layers
            self.values = [None] * self.n_layers

    def get_seq_length(self, layer_idx: int = 0) -> int:  # asked by some model code paths
        return self._width
