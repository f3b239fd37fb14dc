"""Fine-tuning methods: which weights train, and how the model is wrapped (PEFT) for each recipe method.

full: every weight; freeze: only named modules / the top N blocks; lora (DoRA, rsLoRA), qlora (4-bit
base, CUDA + bitsandbytes only), ia3, prompt_tuning and prefix_tuning through PEFT, so the saved adapter
is a standard PEFT folder that ``PeftModel.from_pretrained`` loads.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from tuneforge.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuneforge.config.recipe import Recipe
    from tuneforge.config.train import TrainConfig

log = logging.getLogger(__name__)



@dataclass
class ParamCount:
    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / max(self.total, 1)

    def describe(self) -> str:
        return f"trainable parameters: {self.trainable:,} of {self.total:,} ({100 * self.share:.4f}%)"


def count_parameters(model: torch.nn.Module) -> ParamCount:
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        # 4-bit weights are packed two per byte
        if p.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return ParamCount(trainable, total)


def check_qlora_available() -> None:
    if not torch.cuda.is_available():
        raise UserError(
            "method qlora needs a CUDA GPU (4-bit weights come from bitsandbytes); on this machine use "
            "train.method: lora (same adapter format, full-precision base)"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("method qlora needs bitsandbytes: pip install bitsandbytes (or use train.method: lora)")


def load_base_model(recipe: Recipe) -> PreTrainedModel:
    """The base model for a recipe's method (4-bit for qlora, fp32 weights for full fine-tuning on a GPU)."""
    from tuneforge.models import load_model

    method = recipe.train.method
    if method == "qlora":
        check_qlora_available()
        return _load_4bit(recipe)
    dtype = None
    if method in ("full", "freeze") and recipe.model.dtype == "auto":
        # Trained weights stay in fp32; mixed precision (autocast) gives the speed without bf16 weight updates.
        dtype = "float32"
    update = {"adapter": None, "attn_implementation": training_attention(recipe)}
    model = load_model(recipe.model.model_copy(update=update), dtype=dtype, is_trainable=True)
    return model


def training_attention(recipe: Recipe) -> str:
    """The recipe's ``model.attn_implementation`` for training: ``auto`` becomes ``varlen`` on a CUDA device
    with PyTorch's variable-length kernel (each packed example attends within itself, no [row x row] mask)
    for the model types it suits (``varlen_attention.supports``), except for prompt/prefix tuning, whose
    rows carry a padding mask and virtual tokens."""
    from transformers import AutoConfig

    from tuneforge.models import resolve_device, resolve_model, varlen_attention

    chosen = recipe.model.attn_implementation
    if chosen != "auto" or recipe.train.prompt_learning:
        return chosen
    if recipe.model.dtype == "float32" and recipe.train.mixed_precision == "no":
        return chosen  # the flash kernel computes in bf16/fp16 only
    if not varlen_attention.available(resolve_device(recipe.model.device)):
        return chosen
    config = AutoConfig.from_pretrained(str(resolve_model(recipe.model.name)),
                                        trust_remote_code=recipe.model.trust_remote_code)
    return "varlen" if varlen_attention.supports(config) else chosen


def nf4_config(compute: torch.dtype):
    """QLoRA's quantisation: 4-bit NormalFloat weights, their scales quantised too, products in ``compute``."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def _load_4bit(recipe: Recipe) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    from tuneforge.models import resolve_model
    from tuneforge.models.load import attention_kwargs

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = nf4_config(compute)
    extra = attention_kwargs(training_attention(recipe), torch.device("cuda", torch.cuda.current_device()))
    model = AutoModelForCausalLM.from_pretrained(
        str(resolve_model(recipe.model.name)), quantization_config=quant, dtype=compute,
        device_map={"": torch.cuda.current_device()}, use_safetensors=True,
        trust_remote_code=recipe.model.trust_remote_code, **extra,
    )
    # Not peft's prepare_model_for_kbit_training: it casts every non-4-bit weight (norms, embeddings, the
    # head) to fp32, which carries the whole residual stream, and so every saved activation, in fp32: on an
    # H200, SmolLM2 QLoRA at 8 x 2,048 tokens peaked at 17.5 GB against LoRA's 13.8, at 0.72x TRL's tokens/s
    # (TRL keeps them bf16 too). The base stays in the compute dtype; the adapters are fp32 (PEFT's default).
    for p in model.parameters():
        p.requires_grad_(False)
    if recipe.train.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    return model


def apply_method(model: PreTrainedModel, cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase | None = None):
    """Freeze / wrap ``model`` for ``cfg.method``; returns the model to train."""
    from peft import PeftModel

    method = cfg.method
    if isinstance(model, PeftModel):
        if cfg.is_peft:
            # A model that already carries an adapter keeps training that adapter (sequential stages).
            if not any(p.requires_grad for p in model.parameters()):
                raise UserError("the adapter given to train is frozen: load it with is_trainable=True")
            return model
        model = model.merge_and_unload()
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if method == "freeze":
        return _freeze(model, cfg)
    from peft import get_peft_model

    peft_config = peft_config_for(cfg, model, tokenizer)
    model = get_peft_model(model, peft_config)
    if method in ("lora", "qlora"):
        from tuneforge.train.fast_lora import use_fast_lora

        use_fast_lora(model)  # same maths, fewer passes over activations (falls back where it does not apply)
    return model


def peft_config_for(cfg: TrainConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None):
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType

    method = cfg.method
    if method in ("lora", "qlora"):
        lc = cfg.lora
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
            target_modules=lc.target_modules, use_dora=lc.use_dora, use_rslora=lc.use_rslora, bias="none",
        )
    if method == "ia3":
        return IA3Config(task_type=TaskType.CAUSAL_LM)
    if method == "prompt_tuning":
        pc = cfg.prompt
        kwargs: dict = {}
        if pc.init_text:
            if tokenizer is None:
                raise UserError("train.prompt.init_text needs the tokenizer")
            kwargs = {
                "prompt_tuning_init": "TEXT", "prompt_tuning_init_text": pc.init_text,
                "tokenizer_name_or_path": getattr(tokenizer, "name_or_path", None),
            }
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=pc.num_virtual_tokens, **kwargs)
    if method == "prefix_tuning":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.prompt.num_virtual_tokens)
    raise UserError(f"train.method: unknown method {method!r}")


_BLOCK = re.compile(r"\.layers\.(\d+)\.")


def _freeze(model: PreTrainedModel, cfg: TrainConfig) -> PreTrainedModel:
    fc = cfg.freeze
    if not fc.trainable_modules and not fc.top_blocks:
        raise UserError("method freeze needs train.freeze.trainable_modules or train.freeze.top_blocks")
    n_layers = getattr(model.config, "num_hidden_layers", None)
    first_trained = n_layers - fc.top_blocks if (fc.top_blocks and n_layers) else None
    matched: set[str] = set()
    for name, p in model.named_parameters():
        train = False
        for frag in fc.trainable_modules:
            if frag in name:
                train = True
                matched.add(frag)
        if first_trained is not None:
            m = _BLOCK.search(name)
            if (m and int(m.group(1)) >= first_trained) or name.endswith("model.norm.weight"):
                train = True
        p.requires_grad_(train)
    missing = [f for f in fc.trainable_modules if f not in matched]
    if missing:
        example = next(iter(n for n, _ in model.named_parameters()))
        raise UserError(
            f"train.freeze.trainable_modules: {missing} match no parameter name (names look like {example!r})"
        )
    if fc.top_blocks and (n_layers is None or fc.top_blocks > n_layers):
        raise UserError(f"train.freeze.top_blocks={fc.top_blocks} but the model has {n_layers} blocks")
    return model
