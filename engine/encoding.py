"""Where collections meet encoders: one loaded encoder per spec per process."""

from __future__ import annotations

import threading
from typing import Any

import encoders
from encoders import Encoder

_cache: dict[str, Encoder] = {}
_lock = threading.Lock()


def resolve(encoder: str | Encoder) -> Encoder:
    """An encoder from a spec (``default``, ``token:...``, a model directory) or an instance."""
    if isinstance(encoder, Encoder):
        if encoder.name == "<in-memory>":
            raise ValueError(
                "this encoder has no name a collection could reopen it by: save it first "
                "(encoder.save(dir)) and pass the directory"
            )
        with _lock:
            _cache.setdefault(encoder.name, encoder)
        return encoder
    if not isinstance(encoder, str):
        raise TypeError(
            f"encoder must be a spec string or an Encoder, got {type(encoder).__name__}"
        )
    with _lock:
        enc = _cache.get(encoder)
        if enc is None:
            enc = encoders.load(encoder)
            _cache[encoder] = _cache[enc.name] = enc
        return enc


def texts_or_vectors(vectors: Any, texts: Any, encoder: Encoder | None, what: str) -> Any:
    """The vectors to store or search: given directly, or encoded from texts."""
    if (vectors is None) == (texts is None):
        raise ValueError(f"give exactly one of vectors= or texts= to {what}")
    if texts is None:
        return vectors
    if encoder is None:
        raise ValueError("this collection has no encoder: pass vectors, or create it with encoder=")
    return encoder.encode_documents(encoders.check_texts(texts, "texts"))
