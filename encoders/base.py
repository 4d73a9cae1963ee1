"""The encoder protocol: texts in, vectors out (one per text, or one per token)."""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "vecdex_encoder.json"


def device() -> torch.device:
    """The device encoders run on, chosen once: ``VECDEX_DEVICE`` if set, else CUDA if present."""
    import torch

    wanted = os.environ.get("VECDEX_DEVICE", "").strip().lower()
    if wanted not in ("", "cpu", "cuda"):
        raise ValueError(f"VECDEX_DEVICE must be 'cpu' or 'cuda', got {wanted!r}")
    if wanted == "cuda" or (not wanted and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Returns ``texts`` as a list of non-empty strings, or raises naming the bad item."""
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not one string")
    if not isinstance(texts, Sequence) and not hasattr(texts, "__iter__"):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    out = list(texts)
    if not out:
        raise ValueError(f"{name} is an empty batch")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"{name}[{i}] is empty")
    return out


class Encoder(ABC):
    """Texts -> vectors. ``multi_vector`` encoders return one (n_i, dim) array per text."""

    kind: ClassVar[str]
    multi_vector: ClassVar[bool] = False

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @property
    @abstractmethod
    def name(self) -> str:
        """What ``encoders.load`` needs to rebuild this encoder (``default`` or a path)."""

    @abstractmethod
    def encode_queries(self, texts: Sequence[str]) -> Any: ...

    @abstractmethod
    def encode_documents(self, texts: Sequence[str]) -> Any: ...

    @abstractmethod
    def save(self, directory: str | Path) -> None: ...

    def trainable(self) -> torch.nn.Module:
        """The module ``encoders.train`` optimises; encoders that cannot be trained raise."""
        raise TypeError(f"{type(self).__name__} cannot be trained")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def write_config(directory: Path, config: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))


def read_config(directory: Path) -> dict[str, Any] | None:
    path = directory / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"{path}: encoder config lacks 'kind'")
    return config


def as_float32(x: Any) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
