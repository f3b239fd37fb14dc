"""`tuneforge export RUN`: merged safetensors folder, optional int8 and GGUF copies, checks and sizes.

Layout written under ``<run>/export/`` (or ``export.output_dir``)::

    merged/            standard Hugging Face folder (AutoModelForCausalLM loads it)
    merged-int8/       int8 weight-only copy for CPU serving (with export.int8)
    model-<type>.gguf  for llama.cpp-family runtimes (with export.gguf)
    export.json        the checks' numbers and the size table
"""

from __future__ import annotations

from pathlib import Path

from tuneforge import atomic
from tuneforge.config.export import ExportConfig
from tuneforge.export.merge import folder_size, merge_to_folder, run_weights
from tuneforge.runs import Run


def export_run(run: Run, cfg: ExportConfig | None = None, progress: bool = True) -> dict:
    """Export a trained run; returns the report also written to ``export.json``."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    cfg = cfg or run.recipe.export
    weights = run_weights(run)
    out = Path(cfg.output_dir) if cfg.output_dir else run.path / "export"
    steps = ["merge + logit check"] + (["int8"] if cfg.int8 else []) + ([f"gguf {cfg.gguf}"] if cfg.gguf else [])
    bar = tqdm(total=len(steps), desc="export", disable=not progress, unit="step")

    bar.set_postfix_str(steps[0])
    report = merge_to_folder(
        weights, out / "merged", dtype=cfg.dtype, tolerance=cfg.tolerance,
        trust_remote_code=run.recipe.model.trust_remote_code,
    )
    report["run"] = str(run.path)
    bar.update(1)
    sizes: dict[str, int] = {"base": folder_size(Path(report["base_folder"]))}
    if weights.adapter is not None:
        sizes["adapter"] = folder_size(weights.adapter)
    sizes["merged"] = folder_size(out / "merged")

    if cfg.int8 or cfg.gguf:
        from tuneforge.models import load_tokenizer

        tokenizer = load_tokenizer(str(out / "merged"))
        merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"), dtype=torch.float32).eval()
    if cfg.int8:
        from tuneforge.export.merge import check_inputs, compare_logits, logits_of
        from tuneforge.export.quantize import load_int8_model, save_int8

        bar.set_postfix_str("int8")
        save_int8(merged, tokenizer, out / "merged-int8")
        inputs = check_inputs(tokenizer)
        report["int8_check"] = compare_logits(logits_of(merged, inputs), logits_of(load_int8_model(out / "merged-int8"), inputs))
        sizes["merged-int8"] = folder_size(out / "merged-int8")
        bar.update(1)
    if cfg.gguf:
        from tuneforge.export.to_gguf import check_gguf, source_pre_tokenizer, write_gguf

        bar.set_postfix_str(f"gguf {cfg.gguf}")
        path = out / f"model-{cfg.gguf}.gguf"
        report["gguf"] = write_gguf(
            merged, tokenizer, path, cfg.gguf, pre=source_pre_tokenizer(Path(report["base_folder"])), name=run.name
        )
        report["gguf_check"] = check_gguf(path, merged, tokenizer)
        sizes[f"gguf-{cfg.gguf}"] = folder_size(path)
        bar.update(1)
    bar.close()
    report["sizes_bytes"] = sizes
    report["output_dir"] = str(out)
    atomic.write_json(out / "export.json", report)
    return report


def size_table(sizes: dict[str, int]) -> str:
    """A plain-text table of artifact sizes (MB and relative to the base)."""
    base = sizes.get("base") or 1
    lines = [f"{'artifact':<14}{'size (MB)':>12}{'vs base':>10}"]
    for name, size in sizes.items():
        lines.append(f"{name:<14}{size / 1e6:>12.2f}{size / base:>9.1%}")
    return "\n".join(lines)
