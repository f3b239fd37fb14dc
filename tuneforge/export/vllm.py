"""`tuneforge export RUN --for vllm`: what vLLM serves as is, and the command that serves it.

vLLM serves LoRA adapters beside their base model (``vllm serve BASE --enable-lora --lora-modules
name=path --max-lora-rank R``), many adapters on one base, which is what a team outgrowing one machine
wants. It accepts only part of what PEFT can train (vLLM's ``PEFTHelper._validate_features`` and its
``LoRAConfig``): LoRA (rsLoRA included), no DoRA, no ``modules_to_save``, bias ``none``, a rank no
higher than ``--max-lora-rank`` (one of 8, 16, 32, 64, 128, 256, 320, 512), and target modules among
the attention and MLP projections it packs (q/k/v into ``qkv_proj``, gate/up into ``gate_up_proj``).
An adapter within those limits is copied unchanged; anything else that changes weights (DoRA, IA3,
LoHa, LoKr, a LoRA on the embeddings or with ``modules_to_save``) is merged into full weights (with
the same logit check as ``tuneforge export``), which vLLM serves as a plain model. Prompt- and
prefix-tuning adapters prepend virtual tokens: neither vLLM nor a merge can keep them, and the export
says so instead of writing something that answers differently.

Layout written under ``<export dir>/vllm/``::

    adapter/    the PEFT adapter, unchanged (when vLLM can serve it as an adapter)
    model/      merged full weights (otherwise, or for a full fine-tuning run)
    serve.sh    the `vllm serve` line; BASE=... overrides the base model folder
    README.md   how to serve it, and how to add adapters while vLLM runs
    vllm.json   what was decided and why
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

from tuneforge import atomic
from tuneforge.errors import UserError
from tuneforge.export.merge import RunWeights, merge_to_folder, run_weights
from tuneforge.models.adapters import PROMPT_LEARNING_TYPES
from tuneforge.runs import Run

# vLLM's MaxLoRARanks (vllm/config/lora.py); 1 exists only in recent releases, so the smallest we pick is 8
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# Projections vLLM applies LoRA to in Llama-family decoders (packed into qkv_proj and gate_up_proj)
VLLM_LORA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})


def adapter_problems(config: dict[str, Any]) -> list[str]:
    """Why vLLM could not serve this adapter as an adapter (empty: it can)."""
    kind = str(config.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        return [f"vLLM serves LoRA adapters only, not {kind}"]
    problems = []
    if config.get("use_dora"):
        problems.append("vLLM does not support DoRA")
    if config.get("modules_to_save"):
        problems.append(f"vLLM does not support modules_to_save ({', '.join(config['modules_to_save'])})")
    if config.get("bias", "none") != "none":
        problems.append(f"vLLM supports bias 'none' only, not {config['bias']!r}")
    targets = config.get("target_modules")
    if isinstance(targets, str):
        problems.append(f"target_modules is a pattern ({targets!r}); vLLM needs module names")
    else:
        other = sorted(set(targets or []) - VLLM_LORA_MODULES)
        if other:
            problems.append(f"vLLM applies LoRA to {', '.join(sorted(VLLM_LORA_MODULES))}, not {', '.join(other)}")
    ranks = [int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values())]
    if max(ranks) > VLLM_LORA_RANKS[-1]:
        problems.append(f"rank {max(ranks)} is above vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")
    return problems


def max_lora_rank(config: dict[str, Any]) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds every rank of the adapter."""
    need = max([int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values())])
    return next(r for r in VLLM_LORA_RANKS if r >= need)


def export_run_for_vllm(run: Run) -> dict[str, Any]:
    """``tuneforge export RUN --for vllm``: the run's weights as vLLM serves them, under ``<export>/vllm``."""
    from tuneforge.models.load import resolve_model

    cfg = run.recipe.export
    weights = run_weights(run)
    out = (Path(cfg.output_dir) if cfg.output_dir else run.path / "export") / "vllm"
    return export_for_vllm(weights, resolve_model(weights.base), out, run.name, dtype=cfg.dtype,
                           tolerance=cfg.tolerance, trust_remote_code=run.recipe.model.trust_remote_code)


def export_for_vllm(weights: RunWeights, base_folder: Path, out: Path, name: str, *, dtype: str = "float32",
                    tolerance: float | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """Write ``out`` (adapter or merged model, serve.sh, README.md, vllm.json); returns vllm.json's content."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"name": name, "base": weights.base, "base_folder": str(base_folder)}
    config = {}
    if weights.adapter is not None:
        config = json.loads((weights.adapter / "adapter_config.json").read_text(encoding="utf-8"))
        kind = str(config.get("peft_type", "LORA")).upper()
        if kind in PROMPT_LEARNING_TYPES:
            raise UserError(
                f"{weights.adapter}: a {kind} adapter prepends virtual tokens: vLLM cannot serve it and it cannot "
                "be merged into weights; serve it with `tuneforge serve`, or train LoRA for vLLM"
            )
        report["problems"] = adapter_problems(config)
    if weights.adapter is not None and not report["problems"]:
        with atomic.replace_folder(out / "adapter") as tmp:
            for f in sorted(weights.adapter.iterdir()):
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        shutil.rmtree(out / "model", ignore_errors=True)  # a stale merge from an earlier export
        report.update(kind="adapter", max_lora_rank=max_lora_rank(config), path=str(out / "adapter"))
    else:
        report["merge_check"] = merge_to_folder(weights, out / "model", dtype=dtype, tolerance=tolerance,
                                                trust_remote_code=trust_remote_code)["merge_check"]
        shutil.rmtree(out / "adapter", ignore_errors=True)
        report.update(kind="model", path=str(out / "model"))
    report["command"] = serve_command(report)
    atomic.write_text(out / "serve.sh", serve_script(report))
    (out / "serve.sh").chmod(0o755)
    atomic.write_text(out / "README.md", readme(report))
    atomic.write_json(out / "vllm.json", report)
    return report


def serve_command(report: dict[str, Any]) -> list[str]:
    """The ``vllm serve`` argument list (``$BASE`` stands for the base model folder)."""
    if report["kind"] == "model":
        return ["vllm", "serve", report["path"], "--served-model-name", report["name"]]
    return ["vllm", "serve", "$BASE", "--enable-lora", "--lora-modules", f"{report['name']}={report['path']}",
            "--max-lora-rank", str(report["max_lora_rank"])]


def serve_script(report: dict[str, Any]) -> str:
    args = " ".join('"$BASE"' if a == "$BASE" else shlex.quote(a) for a in report["command"])
    lines = ["#!/usr/bin/env bash", "# Written by `tuneforge export --for vllm`: serve this run with vLLM.", "set -euo pipefail"]
    if report["kind"] == "adapter":
        lines += ["# The base model the adapter was trained on (a folder or a Hugging Face id); override with BASE=...",
                  f"BASE=${{BASE:-{shlex.quote(report['base_folder'])}}}"]
    lines += [f'exec {args} "$@"', ""]
    return "\n".join(lines)


def readme(report: dict[str, Any]) -> str:
    name, path = report["name"], report["path"]
    text = [f"# {name} for vLLM", "", "Serve it (vLLM on a GPU machine; arguments after `serve.sh` go to `vllm serve`):", "",
            "```bash", "./serve.sh --port 8000", "```", ""]
    if report["kind"] == "adapter":
        text += [
            f"The LoRA adapter is served beside its base (`{report['base']}`, folder `{report['base_folder']}`):",
            f"requests name the adapter as the model (`\"model\": \"{name}\"`). The adapter was trained on that",
            "exact base: point `BASE` at a copy of the same weights (a re-quantized or re-converted base answers",
            "differently).", "",
            "More adapters on the same base, while vLLM runs: start it with",
            "`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and post each new adapter folder:", "",
            "```bash",
            "curl -X POST http://127.0.0.1:8000/v1/load_lora_adapter -H 'Content-Type: application/json' \\",
            f"  -d '{{\"lora_name\": \"another\", \"lora_path\": \"{path}\"}}'",
            "```", "",
            "(`/v1/unload_lora_adapter` removes one; runtime updates are meant for trusted networks only.)",
        ]
    else:
        why = "; ".join(report.get("problems") or ["a full fine-tuning run"])
        text += [f"These are full weights (merged because: {why}); vLLM serves them as a plain model named `{name}`."]
    return "\n".join(text) + "\n"
