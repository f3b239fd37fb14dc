"""Merge a tuned run into one standalone model folder, and prove the merge changed nothing.

A PEFT run leaves a small adapter on a shared base; deploying it on runtimes that know nothing of PEFT
needs the adapter folded into the base weights (``W + BA``). The merged folder is a plain Hugging Face
folder (config.json + safetensors + tokenizer) that ``AutoModelForCausalLM.from_pretrained`` loads.

The check compares next-token logits of the reloaded merged folder with those of base+adapter (unmerged)
on a few fixed prompts: the merge is only accepted when they agree within a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge import atomic
from tuneforge.errors import UserError
from tuneforge.models.adapters import PROMPT_LEARNING_TYPES, adapter_type

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuneforge.runs import Run

# Fixed, varied prompts (chat, code, numbers, non-English) for the logit check.
CHECK_PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that reverses a list.",
    "Review: the film was slow but the ending made it worth it. Sentiment?",
    "Calcule 17 * 23 et explique ta méthode.",
)

DEFAULT_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 5e-2}



@dataclass(frozen=True)
class RunWeights:
    """What a run folder holds: the base model spec and either an adapter or a full model folder."""

    base: str
    adapter: Path | None
    full_model: Path | None


def run_weights(run: Run) -> RunWeights:
    """The run's base model and its trained weights (``adapter/`` for PEFT, ``model/`` for full fine-tuning)."""
    found = run.tuned_weights(required=True)
    return RunWeights(run.recipe.model.name, found.adapter, found.model)


def check_inputs(tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    """The check prompts, chat-formatted and left-padded into one batch."""
    texts = []
    for prompt in CHECK_PROMPTS:
        if tokenizer.chat_template:
            texts.append(tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            ))
        else:
            texts.append(prompt)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return dict(tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False))
    finally:
        tokenizer.padding_side = side


def logits_of(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits at every real (non-pad) position, in float32, as one flat [tokens, vocab] tensor."""
    import torch

    with torch.inference_mode():
        out = model(**{k: v.to(model.device) for k, v in inputs.items()})
    mask = inputs["attention_mask"].bool()
    return out.logits.float().cpu()[mask]


def compare_logits(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """Max absolute difference, the same relative to the largest reference logit, and top-1 agreement."""
    diff = (reference - candidate).abs().max().item()
    scale = reference.abs().max().item() or 1.0
    top1 = (reference.argmax(-1) == candidate.argmax(-1)).float().mean().item()
    return {"max_abs_diff": diff, "max_rel_diff": diff / scale, "top1_agreement": top1}


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def merge_to_folder(
    weights: RunWeights,
    out: Path,
    *,
    dtype: str = "float32",
    tolerance: float | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Write the merged model to ``out`` and return the check's numbers.

    The merged folder is written to a temporary name and renamed into place only after it has been
    reloaded from disk and its logits matched base+adapter, so a failed check leaves no half-valid model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.models import load_model, load_tokenizer
    from tuneforge.models.load import resolve_model

    tol = tolerance if tolerance is not None else DEFAULT_TOLERANCE[dtype]
    tokenizer = load_tokenizer(weights.base, trust_remote_code)
    inputs = check_inputs(tokenizer)
    base_folder = resolve_model(weights.base)
    report: dict = {"base": weights.base, "base_folder": str(base_folder), "dtype": dtype, "tolerance": tol}

    if weights.full_model is not None:
        # Full fine-tuning: the run already holds a whole model; re-save it in the requested dtype.
        model = load_model(str(weights.full_model), device="cpu", dtype="float32")
        reference = logits_of(model, inputs)
        report["kind"] = "full"
    else:
        assert weights.adapter is not None
        kind = adapter_type(weights.adapter)
        if kind in PROMPT_LEARNING_TYPES:
            raise UserError(
                f"{weights.adapter}: a {kind} adapter adds virtual tokens and cannot be merged into weights; "
                "serve it with `tuneforge serve` instead"
            )
        base = load_model(weights.base, device="cpu", dtype="float32")
        base_logits = logits_of(base, inputs)
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(base, str(weights.adapter))
        peft_model.eval()
        reference = logits_of(peft_model, inputs)
        # How much the adapter moves the logits: ~0 means an untrained (no-op) adapter.
        report["adapter_effect"] = compare_logits(base_logits, reference)
        model = peft_model.merge_and_unload()
        report["kind"] = kind.lower()

    model = model.to(getattr(torch, dtype))
    with atomic.replace_folder(out) as tmp:  # renamed into place (fsynced) only after the check passed
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del model
        # Reload exactly as a user would, with no tuneforge or PEFT code involved.
        reloaded = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32, use_safetensors=True)
        reloaded.eval()
        report["merge_check"] = compare_logits(reference, logits_of(reloaded, inputs))
        report["merge_check"]["passed"] = report["merge_check"]["max_rel_diff"] <= tol
        if not report["merge_check"]["passed"]:
            raise UserError(
                f"merged model disagrees with base+adapter: relative logit difference "
                f"{report['merge_check']['max_rel_diff']:.2e} > tolerance {tol:.0e} "
                "(raise export.tolerance only if you accept the loss, e.g. for low-precision dtypes)"
            )
    return report
