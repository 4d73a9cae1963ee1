"""Multi-vector (ColBERT-style) encoder: token states -> linear projection -> L2 normalise."""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .base import Encoder, check_texts, device, read_config, write_config
from .resolve import DEFAULT, model_path

QUERY_MARKER = "[unused0]"
DOC_MARKER = "[unused1]"


# What a saved (trained) token encoder may be loaded with besides its saved settings: the rest
# (dim, markers, seed, query_augment) describe the trained weights.
LOAD_OVERRIDES = ("doc_max_len", "query_len", "batch_size")
DOC_MAX_LEN = 256  # the default document length: the length training reads documents at


class TokenEncoder(Encoder):
    """One normalised vector per token (late interaction, scored by MaxSim / Chamfer).

    Queries get a ``[Q]`` marker after ``[CLS]`` and are cut at ``query_len`` tokens; documents
    get a ``[D]`` marker, are cut at ``doc_max_len`` tokens (default 256, or the model's
    position limit when lower; a length over that limit is refused), and drop punctuation and
    padding tokens (the skip-list). The projection starts as a seeded random orthogonal map
    (identity when ``dim`` equals the hidden size) until trained.

    A model trained at 256 may encode documents at more: on SciFact, where 71% of abstracts are
    longer than 256 tokens, the trained model scored nDCG@10 0.7358 at 512 against 0.7265 at 256
    (exact MaxSim; 512 chosen on the train queries, ``bench.token_doclen``), for 35% more tokens.
    ``encoders.load(saved, doc_max_len=512)`` or ``vecdex train --encode-doc-len 512``.

    ``query_augment=True`` pads queries with ``[MASK]`` to ``query_len`` (ColBERT's query
    augmentation). It is off by default: the ``[MASK]`` states of a model never trained with them
    are noise that every MaxSim sum picks up. On SciFact (exact MaxSim, untrained MiniLM, 128-d)
    it drops nDCG@10 from 0.696 to 0.560; turn it on only for a model trained with it.

    Example:
        >>> enc = TokenEncoder("default", dim=128)
        >>> [v.shape[1] for v in enc.encode_documents(["a text"])]
        [128]
    """

    kind = "token"
    multi_vector = True

    def __init__(
        self,
        base: str | os.PathLike[str] = DEFAULT,
        *,
        dim: int = 128,
        query_len: int = 32,
        doc_max_len: int | None = None,
        markers: bool = True,
        query_augment: bool = False,
        batch_size: int = 32,
        seed: int = 0,
        projection: torch.Tensor | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = model_path(base)
        self.base = DEFAULT if str(base) == DEFAULT else str(Path(base).resolve())
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.transformer = AutoModel.from_pretrained(str(path)).to(device()).eval()
        hidden = int(self.transformer.config.hidden_size)
        if dim <= 0 or dim > hidden:
            raise ValueError(f"dim must be in 1..{hidden}, got {dim}")
        self.max_positions = int(self.transformer.config.max_position_embeddings)
        self.query_len = self.check_length("query_len", query_len)
        if doc_max_len is None:  # 256, or the model's limit when it takes fewer positions
            doc_max_len = min(DOC_MAX_LEN, self.max_positions)
        self.doc_max_len = self.check_length("doc_max_len", doc_max_len)
        self.markers, self.query_augment = bool(markers), bool(query_augment)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.proj = torch.nn.Linear(hidden, dim, bias=False).to(device())
        with torch.no_grad():
            if projection is not None:
                if tuple(projection.shape) != (dim, hidden):
                    raise ValueError(
                        f"projection has shape {tuple(projection.shape)}, expected {(dim, hidden)}"
                    )
                self.proj.weight.copy_(projection)
            else:
                self.proj.weight.copy_(_orthogonal(dim, hidden, seed))
        self._path: str | None = None
        tok = self.tokenizer
        self._q_marker = int(tok.convert_tokens_to_ids(QUERY_MARKER))  # type: ignore[arg-type]
        self._d_marker = int(tok.convert_tokens_to_ids(DOC_MARKER))  # type: ignore[arg-type]
        skip = {tok.pad_token_id}
        for ch in string.punctuation:
            tid = tok.convert_tokens_to_ids(ch)
            if tid is not None and tid != tok.unk_token_id:
                skip.add(tid)
        self._skip = torch.tensor(sorted(skip), dtype=torch.long)

    def check_length(self, name: str, value: int) -> int:
        """``value`` as a token length the transformer can take (4 .. its position limit)."""
        if not 4 <= int(value) <= self.max_positions:
            raise ValueError(
                f"{name} must be in 4..{self.max_positions} (the model's position limit), "
                f"got {value}"
            )
        return int(value)

    @property
    def dim(self) -> int:
        return int(self.proj.out_features)

    @property
    def name(self) -> str:
        if self._path is not None:
            return self._path
        return (
            f"token:base={self.base},dim={self.dim},query_len={self.query_len},"
            f"doc_max_len={self.doc_max_len},seed={self.seed}"
        )

    # ---- tokenisation --------------------------------------------------------------------------
    def tokenize(self, texts: list[str], is_query: bool) -> dict[str, torch.Tensor]:
        limit = self.query_len if is_query else self.doc_max_len
        extra = 1 if self.markers else 0
        enc = self.tokenizer(
            texts,
            max_length=limit - extra,
            truncation=True,
            padding="max_length" if is_query and self.query_augment else "longest",
            return_tensors="pt",
        )
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if self.markers:
            marker = self._q_marker if is_query else self._d_marker
            col = torch.full((ids.shape[0], 1), marker, dtype=ids.dtype)
            ids = torch.cat([ids[:, :1], col, ids[:, 1:]], 1)
            mask = torch.cat([mask[:, :1], torch.ones_like(col), mask[:, 1:]], 1)
        if is_query and self.query_augment:
            ids = ids.masked_fill(mask == 0, self.tokenizer.mask_token_id)
            mask = torch.ones_like(mask)
        return {"input_ids": ids, "attention_mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(n, L, dim) normalised token vectors (padding positions included)."""
        batch = {k: v.to(device()) for k, v in batch.items()}
        h = self.transformer(**batch).last_hidden_state
        return F.normalize(self.proj(h), dim=-1)

    def keep_mask(self, batch: dict[str, torch.Tensor], is_query: bool) -> torch.Tensor:
        """Which positions become vectors: all query positions; non-skip document tokens."""
        mask = batch["attention_mask"].bool()
        if is_query:
            return mask
        return mask & ~torch.isin(batch["input_ids"], self._skip)

    # ---- encoding ------------------------------------------------------------------------------
    def _encode(self, texts: Sequence[str], is_query: bool, what: str) -> list[np.ndarray]:
        texts = check_texts(texts, what)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # length bucketing
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenize([texts[i] for i in idx], is_query)
                vecs = self.forward(batch).float().cpu()
                keep = self.keep_mask(batch, is_query)
                for row, i in enumerate(idx):
                    out[i] = vecs[row][keep[row]].numpy()
        return out

    def encode_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._encode(texts, True, "queries")

    def encode_documents(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._encode(texts, False, "documents")

    # ---- training hooks ------------------------------------------------------------------------
    def trainable(self) -> torch.nn.Module:
        return torch.nn.ModuleDict({"transformer": self.transformer, "proj": self.proj})

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dim": self.dim,
            "query_len": self.query_len,
            "doc_max_len": self.doc_max_len,
            "markers": self.markers,
            "query_augment": self.query_augment,
            "seed": self.seed,
        }

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Writes transformer/ (safetensors + tokenizer), projection.safetensors, config."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(str(directory / "transformer"))
        self.tokenizer.save_pretrained(str(directory / "transformer"))
        save_file(
            {"weight": self.proj.weight.detach().cpu().contiguous()},
            str(directory / "projection.safetensors"),
        )
        write_config(directory, self.config())
        self._path = str(directory.resolve())

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **overrides: Any) -> TokenEncoder:
        """A saved token encoder; ``overrides`` replace its saved settings, of which only the
        lengths and the batch size may change under trained weights (``LOAD_OVERRIDES``)."""
        directory = Path(directory)
        config = read_config(directory) or {}
        config.pop("kind", None)
        unknown = sorted(set(overrides) - set(LOAD_OVERRIDES))
        if unknown:
            raise ValueError(
                f"a saved token encoder cannot change {unknown}; "
                f"it takes {', '.join(LOAD_OVERRIDES)}"
            )
        config.update(overrides)
        weight = load_file(str(directory / "projection.safetensors"))["weight"]
        enc = cls(directory / "transformer", projection=weight, **config)
        enc._path = str(directory.resolve())
        return enc


def _orthogonal(rows: int, cols: int, seed: int) -> torch.Tensor:
    if rows == cols:
        return torch.eye(rows)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(cols, rows, generator=g))
    return q.T.contiguous()
