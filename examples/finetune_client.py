"""Fine-tune through `tuneforge serve`'s OpenAI fine-tuning API with the official `openai` client.

The same code fine-tunes on OpenAI's servers when base_url is left out; here it trains a local model:

    tuneforge data prepare --input rotten-tomatoes --template sentiment --out prepared/rt --max-examples 400   # chat JSONL
    export TUNEFORGE_API_KEY=$(openssl rand -hex 32)
    tuneforge serve --model smollm2-135m-instruct &          # fine-tuning API on, state in serve-state/
    python examples/finetune_client.py prepared/rt/train.jsonl prepared/rt/val.jsonl
"""

from __future__ import annotations

import os
import sys
import time

from openai import OpenAI

# Small by default; FT_STEPS=3 FT_BATCH=2 FT_EVAL=10 is the run measured on a busy 2-core CPU (README).
STEPS, BATCH, EVAL = (int(os.environ.get(k, d)) for k, d in (("FT_STEPS", 40), ("FT_BATCH", 4), ("FT_EVAL", 40)))


def main(train_path: str, val_path: str, base: str = "smollm2-135m-instruct") -> None:
    client = OpenAI(base_url=os.environ.get("TUNEFORGE_URL", "http://127.0.0.1:8000/v1"),
                    api_key=os.environ["TUNEFORGE_API_KEY"])
    with open(train_path, "rb") as f:
        train = client.files.create(file=f, purpose="fine-tune")
    with open(val_path, "rb") as f:
        val = client.files.create(file=f, purpose="fine-tune")
    started = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model=base, training_file=train.id, validation_file=val.id, suffix="reviews", seed=42,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": BATCH}}},
        # tuneforge's own settings (all optional): a small, quick run with a short evaluation
        extra_body={"tuneforge": {"max_steps": STEPS, "max_length": 256, "eval_examples": EVAL, "forgetting": False}},
    )
    seen: set[str] = set()
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(5)
        job = client.fine_tuning.jobs.retrieve(job.id)
        for event in reversed(client.fine_tuning.jobs.list_events(job.id, limit=50).data):
            if event.id not in seen:
                seen.add(event.id)
                print(f"[{event.level}] {event.message}")
    print(f"status: {job.status} after {time.monotonic() - started:.0f} s; error: {job.error}")
    if job.status != "succeeded":
        sys.exit(1)
    for ckpt in client.fine_tuning.jobs.checkpoints.list(job.id).data:
        print(f"checkpoint {ckpt.fine_tuned_model_checkpoint}: {ckpt.metrics}")
    print(client.files.content(job.result_files[0]).text.splitlines()[-1])  # last step's metrics
    answer = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=8, messages=[
        {"role": "user", "content": "Review: A warm, funny, beautifully acted film.\n\nQuestion: Is the sentiment of "
         "this review positive or negative?\nAnswer with one word (positive or negative)."}])
    print(f"{job.fine_tuned_model}: {answer.choices[0].message.content}")


if __name__ == "__main__":
    main(*sys.argv[1:])
