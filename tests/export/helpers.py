"""Build a trained-looking run folder (tiny base + a non-trivial LoRA adapter) for export and serve tests."""

from __future__ import annotations

from pathlib import Path


def make_lora_run(run: Path, model_dir: Path, seed: int = 1, scale: float = 0.5) -> Path:
    """``run/recipe.yaml`` naming ``model_dir`` as base, and ``run/adapter`` with random (non-zero) LoRA B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.config import dump_recipe, load_recipe

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    # LoRA A is drawn from the global RNG: seed it, or the adapter (and what it answers) would depend on
    # which tests ran before this one.
    torch.manual_seed(seed)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero (a no-op adapter): perturb it so the adapter matters
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    run.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(run / "adapter")
    (run / "recipe.yaml").write_text(dump_recipe(load_recipe(None, {"model.name": str(model_dir)})))
    return run
