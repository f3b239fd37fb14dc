"""Every example recipe under a memory budget: the plan the memory planner picks, and its peak RSS.

``--plan-only`` runs each recipe's real command (``tuneforge train|multitask|stages|tune``) in a fresh
process up to the planner's decision and stops there (no training): the plan and the estimate for the
recipe's own data, cheap enough for every example. Without it the command trains ``--max-steps``
steps without evaluation under GNU ``time -v`` and reports the peak RSS next to the plan.

    python -m bench.memory_recipes --plan-only                 # every example, 4 GB
    python -m bench.memory_recipes --only quick-lora lora      # train 2 steps, measure the peak
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {  # name: (command, recipe file)
    "quick-lora": ("train", "examples/quick-lora.yaml"),
    "lora": ("train", "examples/lora.yaml"),
    "full": ("train", "examples/full.yaml"),
    "gemma3-270m-instruct": ("train", "examples/gemma3-270m-instruct.yaml"),
    "multitask": ("multitask", "examples/multitask.yaml"),
    "sequential": ("stages", "examples/sequential.yaml"),
    "tune": ("tune", "examples/tune.yaml"),
}


class _Planned(BaseException):  # noqa: N818 - a stop signal, not an error: passes the CLI's `except Exception`
    pass


def plan_worker(argv: list[str], out: str) -> None:
    """Run the CLI with ``argv`` until the first memory plan; write the plan (or the refusal) to ``out``."""
    from tuneforge.cli.main import main
    from tuneforge.errors import UserError
    from tuneforge.train import api

    inner = api.choose_plan
    result: dict[str, Any] = {}

    def recording(*args, **kwargs):
        try:
            plan = inner(*args, **kwargs)
        except UserError as err:
            result["refused"] = str(err)
            raise _Planned() from err
        result.update(plan=plan.describe(), estimate_gb=plan.estimate.total / 2**30, parts=plan.estimate.describe())
        raise _Planned()

    api.choose_plan = recording
    with contextlib.suppress(_Planned):
        main(argv)
    Path(out).write_text(json.dumps(result))


def _argv(command: str, recipe: str, limit_gb: float, out_dir: str, steps: int) -> list[str]:
    extra = []
    if "gemma3" in recipe:  # its data path is relative to a `make install` checkout's .venv
        import importlib.util

        spec = importlib.util.find_spec("evals")  # not imported: its __init__ needs packages we do not install
        assert spec and spec.submodule_search_locations, "the evals package is not installed"
        samples = Path(next(iter(spec.submodule_search_locations))) / "registry/data/ner_finance/samples.jsonl"
        extra = ["--set", f"data.path={samples}"]
    argv = [command, recipe, *extra, "--set", f"train.memory_limit_gb={limit_gb}", "--set", f"run.output_dir={out_dir}",
            "--set", f"train.max_steps={steps}"]
    if command == "train":
        argv += ["--no-eval", "--set", "train.eval_at_start=false"]
    return argv


def plan(name: str, limit_gb: float) -> dict[str, Any]:
    command, recipe = RECIPES[name]
    with tempfile.TemporaryDirectory(prefix="tf-bench-recipe-") as tmp:
        out = Path(tmp) / "plan.json"
        code = ("import sys, json; from bench.memory_recipes import plan_worker; "
                "plan_worker(json.loads(sys.argv[1]), sys.argv[2])")
        argv = _argv(command, recipe, limit_gb, tmp, 2)
        subprocess.run([sys.executable, "-c", code, json.dumps(argv), str(out)], cwd=ROOT, timeout=3600)
        return json.loads(out.read_text()) if out.is_file() else {"refused": "the command failed before planning"}


def measure(name: str, limit_gb: float, steps: int) -> dict[str, Any]:
    """Train ``steps`` steps with the real CLI under GNU time; the printed plan and the peak RSS."""
    command, recipe = RECIPES[name]
    with tempfile.TemporaryDirectory(prefix="tf-bench-recipe-") as tmp:
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "tuneforge.cli.main",
               *_argv(command, recipe, limit_gb, tmp, steps)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=7200)
    text = proc.stdout + proc.stderr
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    plans = re.findall(r"memory plan: (.*?); estimate ([\d.]+) GB", text)
    return {"exit": proc.returncode, "peak_gb": int(peak.group(1)) * 1024 / 2**30 if peak else None,
            "plan": plans[0][0] if plans else None, "estimate_gb": float(plans[0][1]) if plans else None,
            "plans": len(plans)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", choices=sorted(RECIPES))
    p.add_argument("--limit-gb", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--plan-only", action="store_true")
    a = p.parse_args(argv)
    for name in a.only or RECIPES:
        res = plan(name, a.limit_gb) if a.plan_only else measure(name, a.limit_gb, a.steps)
        print(f"{name}: {json.dumps(res)}", flush=True)


if __name__ == "__main__":
    main()
