"""What ``ModelShapes.of`` reads from the loaded models, written out so memory tests load no model:
SmolLM2-135M (LoRA r=16 on every linear layer, and full fine-tuning) and Gemma 3 270M (LoRA r=16)."""

from __future__ import annotations

from tuneforge.train.memory import ModelShapes

SMOL = dict(hidden=576, intermediate=1536, layers=30, vocab=49152, heads=9, kv_heads=3, head_dim=64)
GEMMA = dict(hidden=640, intermediate=2048, layers=18, vocab=262144, heads=4, kv_heads=1, head_dim=256)
SMOL_LORA = ModelShapes(weights=139_399_488 * 4, gradients=4_884_480 * 4, optimizer=4_884_480 * 8, **SMOL)
SMOL_FULL = ModelShapes(weights=134_515_008 * 4, gradients=134_515_008 * 4, optimizer=134_515_008 * 8, **SMOL)
GEMMA_LORA = ModelShapes(weights=271_895_168 * 4, gradients=3_796_992 * 4, optimizer=3_796_992 * 8, **GEMMA)
