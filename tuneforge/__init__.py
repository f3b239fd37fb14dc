"""tuneforge: fine-tune, evaluate, compare with RAG, and ship large language models."""

__version__ = "0.1.0"
