"""Shared benchmark plumbing: machine facts, library versions, the fp32 matmul peak, peak RSS of a
worker process, result tables and the ``BENCHMARKS.md`` sections.

Every comparison runs its contenders inside one invocation, one after the other, so a ratio is
measured under the same load; each contender that loads a model runs in its own fresh process so
that its peak resident memory (``ru_maxrss``) is its own and nothing warms up for the next one.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge import allocator

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
VERSIONED = ("tuneforge", "torch", "transformers", "peft", "accelerate", "trl", "datasets", "lancedb", "numpy")


# ---------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return float("nan")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, Any]:
    import torch

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(memory_gb(), 1),
        "load_avg": "/".join(f"{x:.1f}" for x in load_average()),
        "os": f"{platform.system()} {platform.release()}",
    }


def describe_machine(info: dict[str, Any], vers: dict[str, str]) -> str:
    """Two lines for the report: the machine (with its load at the time) and the library versions."""
    m = (f"{info['date']}; {info['cpu']}, {info['cores']} cores (torch threads {info['torch_threads']}), "
         f"{info['memory_gb']} GB RAM, {info['os']}; load average at start {info['load_avg']}")
    v = ", ".join(f"{k} {val}" for k, val in vers.items())
    return f"- machine: {m}\n- versions: {v}"


# --------------------------------------------------------------------------------------------- measures


def matmul_peak_gflops(n: int = 1024, seconds: float = 2.0, dtype: str = "float32") -> float:
    """Best achieved GFLOP/s (wall clock) of square ``n``x``n`` matmuls over ~``seconds`` (all torch threads).

    Best-of rather than mean: the peak is what the hardware can do when nobody else is running. On a
    busy machine no sample may get the cores to itself; see :func:`matmul_cpu_gflops`.
    """
    return matmul_rates(n, seconds, dtype)[0]


def matmul_cpu_gflops(n: int = 1024, seconds: float = 2.0, dtype: str = "float32") -> float:
    """Matmul GFLOP per CPU-second of this process (all threads): the peak rate of the work itself,
    which other processes taking the cores do not lower (compare with training FLOPs per CPU-second)."""
    return matmul_rates(n, seconds, dtype)[1]


def matmul_rates(n: int = 1024, seconds: float = 2.0, dtype: str = "float32") -> tuple[float, float]:
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, dtype=getattr(torch, dtype))
    torch.mm(a, b)  # warm-up (thread pool, caches)
    best = 0.0
    count = 0
    cpu0 = time.process_time()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        dt_ = time.perf_counter() - t0
        count += 1
        best = max(best, 2 * n**3 / dt_ / 1e9)
    cpu = max(time.process_time() - cpu0, 1e-9)
    return best, 2 * n**3 * count / cpu / 1e9


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) without numpy."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# ----------------------------------------------------------------------------------------------- worker


def cli_env() -> dict[str, str]:
    """Environment variables that put a worker on the allocator the `tuneforge` command restarts itself on
    (``tuneforge/allocator.py``: TCMalloc, else jemalloc, where this machine has one), so a worker that calls
    the Python API measures what a user of the command gets; {} where there is none (glibc's malloc)."""
    library = allocator.find()
    return allocator.preload_env(library) if library else {}


def run_worker(func: str, kwargs: dict[str, Any], env: dict[str, str] | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a fresh Python process; return its dict plus ``peak_rss_mb``.

    A fresh process per contender: peak RSS is the contender's own, and no contender inherits warm
    caches or allocator state from another.
    """
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as tmp:
        out = Path(tmp) / "result.json"
        args = Path(tmp) / "args.json"
        args.write_text(json.dumps(kwargs))
        cmd = [sys.executable, "-m", "bench.common", func, str(args), str(out)]
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(cmd, cwd=ROOT, env=full_env, timeout=timeout)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"benchmark worker {func} failed (exit {proc.returncode})")
        return json.loads(out.read_text())


def run_workers_parallel(jobs: list[tuple[str, dict[str, Any]]], env: dict[str, str] | None = None) -> list[dict[str, Any] | None]:
    """Start every ``(module:function, kwargs)`` worker at once; their results in order (None: it failed).

    On a machine shared with other work, contenders running at the same time get the same share of the
    cores, so their wall times compare; one after another they would meet different loads.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(job: tuple[str, dict[str, Any]]) -> dict[str, Any] | None:
        try:
            return run_worker(job[0], job[1], env=env)
        except Exception as exc:
            print(f"worker {job[0]} failed: {exc}", flush=True)
            return None

    with ThreadPoolExecutor(len(jobs) or 1) as pool:
        return list(pool.map(one, jobs))


def _worker_main(argv: list[str]) -> None:
    func, args_path, out_path = argv
    module, name = func.split(":")
    fn = getattr(importlib.import_module(module), name)
    result = fn(**json.loads(Path(args_path).read_text()))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["allocator"] = allocator.active()  # glibc ("system") unless the worker's env preloaded another
    Path(out_path).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------ table


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table of ``rows`` (dicts) restricted to ``columns``, in that order."""
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


@dataclass
class Report:
    """One benchmark's section of BENCHMARKS.md."""

    name: str  # section key: train, generation, rag, serve
    title: str
    size: str  # "small" or "full"
    command: str = ""  # how to rerun it (default: python -m bench.<name>)
    setup: list[str] = field(default_factory=list)  # bullet lines: what was compared and how
    tables: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)  # "target: ... -> measured ... (met/missed)"
    machine: dict[str, Any] = field(default_factory=machine)
    versions: dict[str, str] = field(default_factory=versions)

    def markdown(self) -> str:
        command = self.command or f"python -m bench.{self.name}" + (" --full" if self.size == "full" else "")
        parts = [f"## {self.title}", "", f"Size: `{self.size}`. Command: `{command}`", "",
                 describe_machine(self.machine, self.versions), ""]
        parts += [f"- {s}" for s in self.setup]
        for t in self.tables:
            parts += ["", t]
        if self.targets:
            parts += ["", "Targets:", ""] + [f"- {t}" for t in self.targets]
        return "\n".join(parts).rstrip() + "\n"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def write_section(report: Report, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the report's generated section of BENCHMARKS.md, leaving the rest alone."""
    start, end = _markers(report.name)
    block = f"{start}\n{report.markdown()}{end}"
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def target_line(what: str, measured: float | None, goal: float, higher_is_better: bool = True, unit: str = "") -> str:
    if measured is None:
        return f"{what}: target {goal:g}{unit}, not measured"
    met = measured >= goal if higher_is_better else measured <= goal
    sign = ">=" if higher_is_better else "<="
    return f"{what}: target {sign} {goal:g}{unit}, measured {fmt(measured)}{unit} -> **{'met' if met else 'missed'}**"


def finish(report: Report, write: bool = True) -> None:
    print(f"\n## {report.title} ({report.size})\n")
    for t in report.tables:
        print(t + "\n")
    for t in report.targets:
        print("- " + t)
    if write:
        write_section(report)
        print(f"\nwritten to {BENCHMARKS_MD}")


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
