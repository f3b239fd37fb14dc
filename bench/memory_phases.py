"""Resident memory per phase of a training run, recorded from inside the process without changing it.

Global hooks mark the phases: the memory planner's call (model loaded and wrapped, data tokenized),
the end of each outermost module forward, the optimizer's step pre-hook (every backward of the step
done) and post-hook (AdamW state allocated). At each mark it reads ``VmRSS`` (now) and ``VmHWM`` (the
peak since the previous mark: the peak is reset with ``/proc/self/clear_refs``), so each estimate term
can be set against the RSS growth of the phase that allocates it. The reset also resets what
``getrusage``'s ``ru_maxrss`` reports: the whole run's peak is the largest of the phases' peaks.
"""

from __future__ import annotations

from typing import Any


def _status_mb() -> tuple[float, float, float]:
    """(VmRSS, VmHWM, RssFile) of this process in MB."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssFile"):
                vals[key] = float(rest.split()[0]) / 1024
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0), vals.get("RssFile", 0.0)


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


class PhaseRecorder:
    """Records (phase, RSS now MB, peak during the phase MB, file-backed MB) at each mark."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._depth = 0
        self._handles: list[Any] = []

    def mark(self, phase: str) -> None:
        rss, hwm, file_mb = _status_mb()
        self.rows.append({"phase": phase, "rss_mb": round(rss), "peak_mb": round(hwm), "file_mb": round(file_mb)})
        _reset_peak()

    def install(self) -> None:
        import torch
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        def pre(module, args):
            self._depth += 1

        def post(module, args, output):
            self._depth -= 1
            if self._depth == 0 and torch.is_grad_enabled():
                self.mark(f"forward ({type(module).__name__})")

        self._handles = [
            register_module_forward_pre_hook(pre), register_module_forward_hook(post),
            register_optimizer_step_pre_hook(lambda opt, a, k: self.mark("backward")),
            register_optimizer_step_post_hook(lambda opt, a, k: self.mark("optimizer step")),
        ]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
