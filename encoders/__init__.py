"""text -> vectors: single-vector (sentence-transformers) and multi-vector (ColBERT-style) encoders,
offline model resolution and contrastive training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Encoder as Encoder
from .base import check_texts as check_texts
from .base import read_config
from .resolve import DEFAULT

if TYPE_CHECKING:
    from .sentence import SentenceEncoder as SentenceEncoder
    from .token import TokenEncoder as TokenEncoder


def __getattr__(name: str) -> Any:
    # The encoders (and torch, 220 MB) load on first use: a process that only indexes or
    # searches vectors never imports them.
    if name == "SentenceEncoder":
        from .sentence import SentenceEncoder

        return SentenceEncoder
    if name == "TokenEncoder":
        from .token import TokenEncoder

        return TokenEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _spec_params(rest: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = part.partition("=")
        if not eq:
            raise ValueError(f"malformed encoder spec parameter {part!r}; expected key=value")
        params[key.strip()] = int(val) if val.strip().lstrip("-").isdigit() else val.strip()
    return params


def load(spec: str | os.PathLike[str], **overrides: Any) -> Encoder:
    """Builds an encoder from a spec.

    Specs: ``default`` (all-MiniLM-L6-v2, offline); ``token`` or ``token:dim=128,query_len=32``
    (multi-vector on the default model, untrained seeded projection); a directory saved by an
    encoder's ``save``; or any sentence-transformers model directory.

    ``overrides`` (token encoders only) replace spec parameters or a saved token encoder's
    settings: e.g. ``load(trained_dir, doc_max_len=512)`` encodes documents at 512 tokens with
    weights trained at 256 (on SciFact that scores better: ``bench.token_doclen``).

    Raises:
        ValueError: an unknown spec, a directory that holds no model, or overrides it cannot take.
    """
    from .sentence import SentenceEncoder
    from .token import TokenEncoder

    text = str(spec)
    if text == "token" or text.startswith("token:"):
        params = _spec_params(text.partition(":")[2])
        params.update(overrides)
        return TokenEncoder(params.pop("base", DEFAULT), **params)
    path = Path(text)
    config = read_config(path) if path.is_dir() else None
    if overrides and (config is None or config.get("kind") != TokenEncoder.kind):
        raise ValueError(
            f"encoder {text!r} is not a token encoder: overrides {sorted(overrides)} apply to "
            "token encoders only"
        )
    if text == DEFAULT:
        return SentenceEncoder(DEFAULT)
    if path.is_dir():
        if config is not None:
            kind = config.pop("kind")
            if kind == TokenEncoder.kind:
                return TokenEncoder.load(path, **overrides)
            if kind == SentenceEncoder.kind:
                return SentenceEncoder.load(path, **config)
            raise ValueError(f"{path}: unknown encoder kind {kind!r}")
        if (path / "modules.json").is_file() or (path / "config.json").is_file():
            return SentenceEncoder(path)
    raise ValueError(
        f"unknown encoder {text!r}: use 'default', 'token[:key=value,...]' or a model directory"
    )


__all__ = ["Encoder", "SentenceEncoder", "TokenEncoder", "check_texts", "load"]
