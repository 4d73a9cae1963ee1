"""Single-vector encoder: any sentence-transformers model, offline default all-MiniLM-L6-v2."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Encoder, as_float32, check_texts, device, write_config
from .resolve import DEFAULT, model_path


class SentenceEncoder(Encoder):
    """One normalised float32 vector per text.

    ``sentence-transformers`` sorts each call's texts by length before batching (length
    bucketing), so padding stays small. ``truncate_dim`` keeps the first dimensions of a
    Matryoshka-trained model, renormalised.

    Example:
        >>> enc = SentenceEncoder("default")
        >>> enc.encode_documents(["a text"]).shape
        (1, 384)
    """

    kind = "sentence"

    def __init__(
        self,
        model: str | os.PathLike[str] | Any = DEFAULT,
        *,
        batch_size: int = 64,
        max_seq_length: int | None = None,
        truncate_dim: int | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        if isinstance(model, SentenceTransformer):
            self.model = model
            self._name = "<in-memory>"
        else:
            path = model_path(model)
            self.model = SentenceTransformer(str(path), device=str(device()))
            self._name = DEFAULT if str(model) == DEFAULT else str(Path(model).resolve())
        if max_seq_length is not None:
            self.model.max_seq_length = int(max_seq_length)
        dim_of = getattr(self.model, "get_embedding_dimension", None)
        full = (dim_of or self.model.get_sentence_embedding_dimension)()
        if truncate_dim is not None and not 0 < truncate_dim <= (full or 0):
            raise ValueError(f"truncate_dim must be in 1..{full}, got {truncate_dim}")
        self.truncate_dim = truncate_dim
        self.batch_size = int(batch_size)
        self._dim = int(truncate_dim or full or 0)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    def _encode(self, texts: Sequence[str], what: str) -> np.ndarray:
        texts = check_texts(texts, what)
        x = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.truncate_dim is None,
            show_progress_bar=False,
        )
        if self.truncate_dim is not None:
            x = x[:, : self.truncate_dim]
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return as_float32(x)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "queries")

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, "documents")

    # ---- training hooks ------------------------------------------------------------------------
    def trainable(self) -> torch.nn.Module:
        return self.model

    def embed_for_training(self, texts: list[str], is_query: bool) -> torch.Tensor:
        """Differentiable (n, full_dim) embeddings, not normalised."""
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = prepare(texts)
        features = {
            k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v
            for k, v in features.items()
        }
        return self.model(features)["sentence_embedding"]

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Writes a sentence-transformers directory (safetensors + JSON) and vecdex's config."""
        directory = Path(directory)
        self.model.save(str(directory))
        write_config(directory, {"kind": self.kind, "truncate_dim": self.truncate_dim})
        self._name = str(directory.resolve())

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **config: Any) -> SentenceEncoder:
        config.pop("kind", None)
        return cls(directory, **config)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)
