"""MUVERA benchmark, data: the encoder variants, FDE shapes, the synthetic generator and the token
caches (``bench/.cache/muvera``: float16 tokens + int64 offsets, never pickle)."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import CACHE_ROOT, cached_token_sets, file_digest, pack

CACHE = CACHE_ROOT / "muvera"
K = 10
TARGETS = (0.90, 0.95)
CURVE_POINTS = (10, 20, 50, 100, 200, 500, 1000, 2000)

ENCODERS: dict[str, dict[str, Any]] = {
    # MiniLM token states through a seeded random orthogonal 128-d projection (untrained),
    # [Q]/[D] markers, queries padded with [MASK] to 32 tokens: the token encoder's default until
    # [MASK] padding was turned off (encoders.load("token") today is this without the padding).
    "untrained128": {
        "dim": 128,
        "query_len": 32,
        "doc_max_len": 256,
        "markers": True,
        "query_augment": True,
        "seed": 0,
    },
    # The data README's variant: raw MiniLM token embeddings (identity projection), no markers,
    # no query augmentation (the skip-list still drops punctuation from documents).
    "raw384": {
        "dim": 384,
        "query_len": 32,
        "doc_max_len": 256,
        "markers": False,
        "query_augment": False,
        "seed": 0,
    },
    # A trained token encoder saved by `vecdex train --encoder token` or `bench.encoders
    # --train-token`: give its directory with --token-model (its config is read from there).
    "trained": {"model": None, "markers": True, "query_augment": False, "query_len": 32},
}


@dataclass(frozen=True)
class FdeConfig:
    """One FDE shape: (R_reps, k_sim, d_proj), optional final projection."""

    r_reps: int
    k_sim: int
    d_proj: int
    d_final: int = 0

    @property
    def name(self) -> str:
        base = f"({self.r_reps},{self.k_sim},{self.d_proj})"
        return base + (f"->{self.d_final}" if self.d_final else "")

    def params(self) -> dict[str, int]:
        return {
            "r_reps": self.r_reps,
            "k_sim": self.k_sim,
            "d_proj": self.d_proj,
            "d_final": self.d_final,
        }

    def dims(self, dim: int) -> int:
        return self.d_final or self.r_reps * (1 << self.k_sim) * (self.d_proj or dim)

    @classmethod
    def parse(cls, text: str) -> FdeConfig:
        parts = [int(p) for p in text.strip().split("/")]
        if len(parts) not in (3, 4) or min(parts) < 0:
            raise argparse.ArgumentTypeError(f"expected R/k_sim/d_proj[/d_final], got {text!r}")
        return cls(*parts)


PARETO = (FdeConfig(20, 3, 8), FdeConfig(20, 4, 8), FdeConfig(20, 5, 8), FdeConfig(20, 5, 16))
MAIN = FdeConfig(20, 5, 16)


@dataclass(frozen=True)
class SyntheticSpec:
    """Seeded topic-structured token sets. Each topic has ``words`` word vectors around its
    centre (Zipf-like popularity); a document mixes one or two topics' words plus noise; a query
    takes ``q_from_doc`` of its tokens from one source document (noisier copies) and the rest
    from that document's main topic, so many same-topic documents compete."""

    n_docs: int = 100_000
    n_queries: int = 100
    dim: int = 64
    docs_per_topic: int = 100
    words: int = 64
    doc_tokens: tuple[int, int] = (32, 64)
    query_tokens: tuple[int, int] = (16, 32)
    spread: float = 0.9
    doc_noise: float = 0.35
    query_noise: float = 0.6
    q_from_doc: float = 0.6
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def cached_tokens(
    key: str, compute: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Token sets under ``CACHE`` (see ``bench.common.cached_token_sets``)."""
    return cached_token_sets(CACHE, key, compute)


# ---- SciFact -----------------------------------------------------------------------------------
def scifact_tokens(data: Path, variant: str, qids: list[str], queries: dict, corpus: list):
    from encoders import TokenEncoder
    from engine import beir

    cfg = ENCODERS[variant]
    holder: dict[str, Any] = {}

    def enc() -> Any:
        if "e" not in holder:
            if cfg.get("model"):
                import encoders

                holder["e"] = encoders.load(cfg["model"])
            else:
                holder["e"] = TokenEncoder("default", **cfg)
        return holder["e"]

    digest = file_digest(data / "corpus.jsonl", data / "queries.jsonl", data / "qrels" / "test.tsv")
    key = dict(cfg)
    if cfg.get("model"):
        # The cache follows the model's weights, not its path, and only the entries that
        # bench.plaid's ENCODERS["trained"] also holds: a saved model brings its own dim /
        # lengths / seed (bench.muvera copies them into cfg), so both benchmarks share one
        # cache instead of encoding SciFact twice (~4 min a pass).
        key = {k: cfg[k] for k in ("markers", "query_augment", "query_len") if k in cfg}
        key["model"] = file_digest(Path(cfg["model"]) / "projection.safetensors")
    conf = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    texts = [beir.document_text(d) for d in corpus]
    d = cached_tokens(
        f"scifact-{variant}-{conf}-{digest}-docs",
        lambda: pack(enc().encode_documents(texts), np.float16),
    )
    q = cached_tokens(
        f"scifact-{variant}-{conf}-{digest}-queries",
        lambda: pack(enc().encode_queries([queries[i] for i in qids]), np.float16),
    )
    return d, q


# ---- synthetic ---------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _synthetic_layout(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    """The cheap, always regenerated part: vocabulary, document lengths and topics."""
    topics = max(1, spec.n_docs // spec.docs_per_topic)
    rv = np.random.default_rng([spec.seed, 0])
    centres = _unit(rv.standard_normal((topics, spec.dim)))
    noise = _unit(rv.standard_normal((topics, spec.words, spec.dim)))
    vocab = _unit(centres[:, None, :] + spec.spread * noise).reshape(-1, spec.dim)
    p = 1.0 / np.arange(1, spec.words + 1) ** 0.8
    rt = np.random.default_rng([spec.seed, 1])
    lo, hi = spec.doc_tokens
    lens = rt.integers(lo, hi + 1, spec.n_docs)
    t1 = rt.integers(0, topics, spec.n_docs)
    t2 = np.where(rt.random(spec.n_docs) < 0.5, rt.integers(0, topics, spec.n_docs), t1)
    offsets = np.zeros(spec.n_docs + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return {"vocab": vocab, "p": p / p.sum(), "lens": lens, "t1": t1, "t2": t2, "offsets": offsets}


def _synthetic_docs(spec: SyntheticSpec, lay: dict[str, np.ndarray]) -> tuple:
    rd = np.random.default_rng([spec.seed, 2])
    offsets = lay["offsets"]
    total = int(offsets[-1])
    out = np.empty((total, spec.dim), dtype=np.float16)
    step = 1 << 19
    for a in range(0, total, step):
        b = min(total, a + step)
        doc = np.searchsorted(offsets, np.arange(a, b), side="right") - 1
        topic = np.where(rd.random(b - a) < 0.35, lay["t2"][doc], lay["t1"][doc])
        word = topic * spec.words + rd.choice(spec.words, b - a, p=lay["p"])
        noise = _unit(rd.standard_normal((b - a, spec.dim), dtype=np.float32))
        out[a:b] = _unit(lay["vocab"][word] + spec.doc_noise * noise)
    return out, offsets


def _synthetic_queries(spec: SyntheticSpec, lay: dict[str, np.ndarray], docs: np.ndarray):
    rq = np.random.default_rng([spec.seed, 3])
    offsets, lens = lay["offsets"], lay["lens"]
    src = rq.integers(0, spec.n_docs, spec.n_queries)
    lo, hi = spec.query_tokens
    qlens = rq.integers(lo, hi + 1, spec.n_queries)
    q_off = np.zeros(spec.n_queries + 1, dtype=np.int64)
    np.cumsum(qlens, out=q_off[1:])
    total = int(q_off[-1])
    # A token of the source document, or a word of its main topic.
    pick = offsets[src].repeat(qlens) + (rq.random(total) * lens[src].repeat(qlens)).astype(int)
    topic_word = lay["vocab"][
        lay["t1"][src].repeat(qlens) * spec.words + rq.choice(spec.words, total, p=lay["p"])
    ]
    from_doc = rq.random(total) < spec.q_from_doc
    base = np.where(from_doc[:, None], docs[pick].astype(np.float32), topic_word)
    noise = _unit(rq.standard_normal((total, spec.dim), dtype=np.float32))
    return _unit(base + spec.query_noise * noise), q_off, src


def synthetic_data(spec: SyntheticSpec):
    lay = _synthetic_layout(spec)
    doc_spec = SyntheticSpec(**{**asdict(spec), "n_queries": 0})
    dt, d_off, dmeta = cached_tokens(
        f"synthetic-{doc_spec.key()}-docs", lambda: _synthetic_docs(spec, lay)
    )
    qt, q_off, qmeta = cached_tokens(
        f"synthetic-{spec.key()}-queries", lambda: _synthetic_queries(spec, lay, dt)[:2]
    )
    return dt, d_off, qt, q_off, {"docs_cache": dmeta, "queries_cache": qmeta}
