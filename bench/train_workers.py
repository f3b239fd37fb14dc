"""The two sides of ``bench.train``: one training run of TRL's SFTTrainer or of tuneforge, each in its own process.

Both train the bundled model with the shared settings below on the same JSONL files, read the clocks at the
end of every optimizer step (``steady_state``: steps 2..S timed) and score the trained model in place with
one shared evaluator (``validation_loss``), so neither tool measures itself. ``bench.train`` and
``bench.train_vs_best`` start them through ``bench.common.run_worker`` ("bench.train_workers:trl_worker").
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.data import read_jsonl

MODEL = "smollm2-135m-instruct"
SETTINGS = {
    # 2 examples per step unpacked; packed: 1 row of 192 tokens (~2 examples of this mix, mean ~94 tokens),
    # so every contender takes about the same number of examples and tokens per optimizer step. The few
    # long reviews above 192 tokens are truncated for every contender alike. (Small because the recorded
    # runs had a few percent of a shared 2-core machine; --full uses the same settings for longer.)
    "batch": 2, "packed_batch": 1, "max_length": 192, "warmup_ratio": 0.03, "max_grad_norm": 1.0, "seed": 0,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
    "lr": {"lora": 2e-4, "full": 2e-5},
}


def worker_env(threads: int | None, omp_passive: bool) -> dict[str, str]:
    """The environment of every contender's process. OpenMP keeps its own wait policy, as users run both tools
    (threads spin a while between parallel regions); ``omp_passive`` makes them sleep at once, as ``bench.train``'s
    own tables and ``bench.train_malloc_ab`` still do and ``--vs-best`` did before 2026-12-04 15:15: fewer CPU-s
    burnt waiting on a shared machine, but 35-50% fewer tokens/s for both tools here (BENCHMARKS.md, "Reading
    of the 2026-12-04 fourth-session run")."""
    env = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    if omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


# ------------------------------------------------------------------------------------- shared evaluator


def encode_pair(tokenizer, messages: list[dict], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels with everything before the last answer masked."""
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    labels = [-100] * min(len(p_ids), len(ids)) + ids[len(p_ids):]
    return ids, labels


def validation_loss(model, tokenizer, val_file: Path, max_length: int) -> float:
    """Token-weighted mean cross-entropy over the assistant tokens of every held-out line."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for row in read_jsonl(val_file):
            ids, labels = encode_pair(tokenizer, row["messages"], max_length)
            x = torch.tensor([ids], device=device)
            y = torch.tensor([labels[1:] + [-100]], device=device)
            logits = model(input_ids=x).logits.float()
            loss = torch.nn.functional.cross_entropy(logits[0], y[0], ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((y != -100).sum())
    return total / max(count, 1)


# ------------------------------------------------------------------------------------------------ timing


def steady_state(marks: list[tuple[float, float]], step_tokens: list[int]) -> dict[str, Any]:
    """Throughput over steps 2..S from (wall, cpu) clock readings taken at the end of every step.

    Step 1 is left out for every contender (allocator and thread-pool warm-up). CPU seconds are this
    process's own (all its threads): on a shared machine they measure the work, wall seconds the wait.
    """
    if len(marks) < 2 or len(step_tokens) < len(marks):
        raise RuntimeError(f"need >= 2 timed steps, got {len(marks)} clock marks and {len(step_tokens)} batches")
    tokens = sum(step_tokens[1 : len(marks)])
    wall = marks[-1][0] - marks[0][0]
    cpu = marks[-1][1] - marks[0][1]
    return {"tokens": tokens, "seconds": wall, "cpu_seconds": cpu, "tokens_per_s": tokens / wall,
            "tokens_per_cpu_s": tokens / cpu, "timed_steps": len(marks) - 1, "all_tokens": sum(step_tokens)}


def clock(cuda: bool):
    """A function that reads (wall, CPU) clocks at the end of a step; on a GPU after the queued kernels
    finish, so that a step's mark is not its launch."""
    import torch

    def read() -> tuple[float, float]:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter(), time.process_time()

    return read


def gpu_memory() -> dict[str, float]:
    """Peak GPU memory of this process so far (MB): what PyTorch's allocator handed out and what it held."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"gpu_peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
            "gpu_peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20}


def squared_lengths(position_ids, mask, shape: tuple[int, int]) -> int:
    """Sum over a batch's examples of their length squared (examples start where position ids restart;
    without ids, one per row; ``mask`` 0: padding, left out): what attention within each example costs."""
    import torch

    from tuneforge.models.varlen_attention import cumulative_lengths

    cu, _ = cumulative_lengths(position_ids, mask, shape, torch.device("cpu"))
    return int((torch.diff(cu).long() ** 2).sum())


def flop_counts(n_marks: int, counts: list[int], shapes: list[tuple[int, ...]]) -> dict[str, int]:
    """Over the timed steps (as ``steady_state``): sum of tokens x row width, the loss positions and, where
    the shapes carry it (third element), the sum of example lengths squared."""
    timed = range(1, n_marks)
    out = {"ctx_tokens": sum(counts[i] * shapes[i][0] for i in timed),
           "loss_tokens": sum(shapes[i][1] for i in timed)}
    if all(len(shapes[i]) > 2 for i in timed):
        out["example_ctx_tokens"] = sum(shapes[i][2] for i in timed)
    return out


# ------------------------------------------------------------------------------------------------ TRL


def trl_worker(train_file: str, val_file: str, method: str, steps: int, packing: bool, tuned: bool = False,
               bf16: str | None = None, model: str = MODEL, device: str = "cpu", rows: int | None = None,
               max_length: int | None = None, attn: str | None = None) -> dict[str, Any]:
    """Train with TRL's SFTTrainer (its defaults, our shared hyperparameters); time the training steps.

    TRL's defaults include bf16 autocast (``bf16=True`` unless fp16) and gradient checkpointing;
    ``tuned`` turns both off (fp32, no recomputation), which is what suits a CPU without native bfloat16.
    With ``tuned``, ``bf16="autocast"`` keeps its bf16 autocast and ``bf16="weights"`` also loads the model
    in bfloat16 (PEFT keeps the adapters float32): its settings for a CPU with AVX512-BF16 or AMX.
    ``device="cuda"`` (``bench.gpu_train``): rows of ``max_length`` tokens, ``rows`` of them per step, and
    ``method="qlora"``: the base loaded in 4 bits by bitsandbytes, as tuneforge's qlora loads it.
    ``attn="varlen"``: the model attends through PyTorch's variable-length flash kernel (tuneforge's
    registration of it), which TRL's padding-free batches (packing) feed with their example bounds: TRL's
    GPU setting with a flash-attention kernel, where the ``flash-attn`` package cannot be installed.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tuneforge.models import resolve_model
    from tuneforge.models.load import _in_cache, half_precision_folder

    folder = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    dtype = torch.bfloat16 if bf16 == "weights" else torch.float32
    if dtype == torch.bfloat16 and _in_cache(folder):  # bfloat16 weights on disk, as tuneforge loads them
        folder = half_precision_folder(folder, dtype)
    load: dict[str, Any] = {"dtype": dtype}
    if attn == "varlen":
        from tuneforge.models import varlen_attention

        load["attn_implementation"] = varlen_attention.register()
    elif attn:
        load["attn_implementation"] = attn
    if method == "qlora":  # the quantisation tuneforge's qlora loads its base with
        from tuneforge.train.methods import nf4_config

        load |= {"dtype": torch.bfloat16, "device_map": {"": 0}, "quantization_config": nf4_config(torch.bfloat16)}
    base = AutoModelForCausalLM.from_pretrained(str(folder), **load)
    lines = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in read_jsonl(Path(train_file))]
    s = SETTINGS
    max_length = max_length or s["max_length"]
    out = tempfile.mkdtemp(prefix="trl-bench-")
    args = SFTConfig(
        output_dir=out, max_steps=steps, per_device_train_batch_size=rows or s["packed_batch" if packing else "batch"],
        gradient_accumulation_steps=1,
        learning_rate=s["lr"]["full" if method == "full" else "lora"], lr_scheduler_type="cosine",
        warmup_steps=s["warmup_ratio"], max_grad_norm=s["max_grad_norm"], weight_decay=0.0, max_length=max_length,
        packing=packing, logging_steps=10_000, save_strategy="no", eval_strategy="no", report_to="none",
        seed=s["seed"], use_cpu=device == "cpu", dataloader_num_workers=0,
        completion_only_loss=True,  # its default for this data, made explicit
        **({"bf16": bf16 is not None, "gradient_checkpointing": False} if tuned else {}),
    )
    lc = s["lora"]
    peft_config = None if method == "full" else LoraConfig(
        r=lc["r"], lora_alpha=lc["alpha"], lora_dropout=lc["dropout"], target_modules=lc["target_modules"],
        task_type="CAUSAL_LM", bias="none",
    )
    trainer = SFTTrainer(model=base, args=args, train_dataset=Dataset.from_list(lines),
                         processing_class=tokenizer, peft_config=peft_config)

    counts: list[int] = []
    shapes: list[tuple[int, ...]] = []  # (row width, loss positions, sum of lengths^2) per batch: FLOP counts
    collate_s: list[float] = []  # host seconds per batch building it (on the step's critical path)
    inner = trainer.data_collator

    def counting_collator(features):
        t = time.perf_counter()
        batch = inner(features)
        collate_s.append(time.perf_counter() - t)
        mask = batch.get("attention_mask")
        counts.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        labels = batch.get("labels")
        ids = batch["input_ids"]
        shapes.append((int(ids.shape[-1]),
                       int((labels[..., 1:] != -100).sum()) if labels is not None else counts[-1],
                       squared_lengths(batch.get("position_ids"), mask, tuple(ids.shape))))
        return batch

    trainer.data_collator = counting_collator
    marks: list[tuple[float, float]] = []
    read_clocks = clock(device != "cpu")

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            marks.append(read_clocks())

    trainer.add_callback(Clock())
    trainer.train()
    train_rss = common.peak_rss_mb()  # before the shared evaluator below
    train_gpu = gpu_memory()
    # The dataloader may fetch one batch ahead: the first `steps` collated batches are the trained ones.
    timing = steady_state(marks, counts[:steps])
    timing.update(flop_counts(len(marks), counts, shapes))
    val = validation_loss(trainer.model, tokenizer, Path(val_file), max_length)
    shutil.rmtree(out, ignore_errors=True)
    return {**timing, **train_gpu, "val_loss": val, "train_peak_rss_mb": train_rss,
            "collate_ms": 1e3 * sum(collate_s) / max(len(collate_s), 1),
            "params": sum(p.numel() for p in base.parameters()) if method == "full"
            else sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" not in n),
            "gradient_checkpointing": bool(args.gradient_checkpointing), "bf16": bool(args.bf16)}


# ------------------------------------------------------------------------------------------ tuneforge


def tuneforge_worker(train_file: str, val_file: str, method: str, steps: int, packing: bool,
                     tuned: bool = False, checkpointing: bool = False, bf16: str | None = None,
                     model: str = MODEL, device: str = "cpu", rows: int | None = None,
                     max_length: int | None = None, attn: str = "auto") -> dict[str, Any]:
    """Train with tuneforge (its defaults, the shared hyperparameters); time the training steps.
    ``bf16="autocast"``: ``train.mixed_precision: bf16``; ``bf16="weights"``: ``model.dtype: bfloat16`` (the
    frozen base in bfloat16, the LoRA adapters float32). ``device``, ``rows``, ``max_length``: as ``trl_worker``'s."""
    from tuneforge.config import load_recipe
    from tuneforge.models import load_tokenizer
    from tuneforge.runs import create_run
    from tuneforge.train import train

    s = SETTINGS
    out = tempfile.mkdtemp(prefix="tf-bench-run-")
    lc = s["lora"]
    max_length = max_length or s["max_length"]
    overrides: dict[str, Any] = {
        "model.name": model, "model.device": device, "model.attn_implementation": attn, "run.output_dir": out,
        "run.name": f"bench-{method}",
        "run.seed": s["seed"], "train.method": method, "train.max_steps": steps,
        "train.batch_size": rows or s["packed_batch" if packing else "batch"], "train.grad_accum": 1,
        "train.learning_rate": s["lr"]["full" if method == "full" else "lora"], "train.scheduler": "cosine",
        "train.warmup_ratio": s["warmup_ratio"],
        "train.max_grad_norm": s["max_grad_norm"], "train.max_length": max_length, "train.packing": packing,
        "train.eval_at_start": False, "train.save_every": 10**6, "train.log_every": 10**6,
        "train.lora.r": lc["r"], "train.lora.alpha": lc["alpha"], "train.lora.dropout": lc["dropout"],
        "train.lora.target_modules": lc["target_modules"], "train.gradient_checkpointing": checkpointing,
        "train.mixed_precision": "bf16" if bf16 == "autocast" else "auto",
        "model.dtype": "bfloat16" if bf16 == "weights" else "auto",
    }
    recipe = load_recipe(None, overrides)
    run = create_run(recipe, "bench-train", inputs=[train_file])
    tokenizer = load_tokenizer(model)
    # Count each micro-batch's real tokens by wrapping the loop's collate (a measurement hook only:
    # the batch is returned unchanged), and read the clocks after every optimizer step.
    import tuneforge.train.loop as loop

    counts: list[int] = []
    shapes: list[tuple[int, ...]] = []  # (row width, loss positions, sum of lengths^2) per batch: FLOP counts
    collate_s: list[float] = []  # host seconds per batch building it (on the step's critical path)
    inner = loop.collate

    def counting_collate(*args, **kwargs):
        t = time.perf_counter()
        batch = inner(*args, **kwargs)
        collate_s.append(time.perf_counter() - t)
        counts.append(batch.n_tokens)
        shapes.append((int(batch.input_ids.shape[1]), batch.n_target,
                       squared_lengths(batch.position_ids, batch.attention_mask, tuple(batch.input_ids.shape))))
        return batch

    loop.collate = counting_collate
    marks: list[tuple[float, float]] = []
    read_clocks = clock(device != "cpu")
    # No val_file: validation is measured afterwards by the shared function, same as for TRL.
    result = train(recipe, run, Path(train_file), None, tokenizer=tokenizer,
                   on_step=lambda step, loss: marks.append(read_clocks()))
    loop.collate = inner
    train_rss = common.peak_rss_mb()  # before the shared evaluator below
    train_gpu = gpu_memory()
    timing = steady_state(marks, counts)
    timing.update(flop_counts(len(marks), counts, shapes))
    # The trained model in place, as for TRL (reloading it would put a second copy in this process's peak RSS).
    val = validation_loss(result.model, tokenizer, Path(val_file), max_length)
    shutil.rmtree(out, ignore_errors=True)
    return {**timing, **train_gpu, "val_loss": val, "collate_ms": 1e3 * sum(collate_s) / max(len(collate_s), 1),
            "train_peak_rss_mb": train_rss, "params": result.total_params - (result.trainable_params if method != "full" else 0),
            "tuneforge_tokens_per_s": result.tokens_per_s,
            "gradient_checkpointing": recipe.train.gradient_checkpointing}


# ---------------------------------------------------------------------------------------------- driver
