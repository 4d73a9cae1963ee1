"""The BEIR evaluation behind ``vecdex eval``.

Its metrics live in :mod:`engine.metrics` (trec_eval's, through pytrec_eval, as BEIR and MTEB
compute them) and are re-exported here under their old names.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import index as ix

from . import beir, encoding
from .engine import Engine
from .metrics import evaluate_run as evaluate_run
from .metrics import mrr_at_k as mrr_at_k
from .metrics import ndcg_at_k as ndcg_at_k
from .metrics import recall_at_k as recall_at_k

ADD_BATCH = 4096  # documents per add() call when building an evaluation collection


def evaluate_beir(
    directory: str | Path,
    *,
    split: str = "test",
    encoders_: Sequence[str] = ("default",),
    indexes: Sequence[str] = ("flat",),
    k: int = 100,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Builds a collection per (encoder, index) from a BEIR corpus and scores the split's queries.

    The corpus is encoded once per encoder; each index is then built from those vectors.
    Multi-vector (token) encoders pair with the multi-vector index specs (``muvera...``,
    ``chamfer`` = exhaustive exact MaxSim, ``token_ann``) and single-vector encoders with the
    others; for a multi-vector encoder ``flat`` (the exact oracle) means ``chamfer``. Pairs of
    different kinds are skipped, so ``--encoder default token --index flat muvera`` compares
    both kinds in one run; an encoder left with no index raises.

    Returns:
        One row per (encoder, index): metrics plus timings (encode, index, search seconds).
    """
    directory = Path(directory)
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise ValueError(f"{qrels_path} does not exist (is {directory} a BEIR directory?)")
    qrels = beir.read_qrels(qrels_path)
    corpus = beir.read_jsonl(directory / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in beir.read_jsonl(directory / "queries.jsonl")}
    qids = [q for q in qrels if q in queries]
    doc_ids = [d["_id"] for d in corpus]
    plan = []
    for spec in encoders_:
        enc = encoding.resolve(spec)
        plan.append((spec, enc, indexes_for(enc.multi_vector, indexes, spec)))
    rows = []
    for spec, enc, enc_indexes in plan:
        t0 = time.perf_counter()
        docs = enc.encode_documents([beir.document_text(d) for d in corpus])
        qv = enc.encode_queries([queries[q] for q in qids])
        t_enc = time.perf_counter() - t0
        for index_spec in enc_indexes:
            with tempfile.TemporaryDirectory(prefix="vecdex-eval-") as tmp:
                # A throw-away collection: no fsync, no checkpoint, dropped at the end.
                eng = Engine(tmp, checkpoint_bytes=1 << 62)
                col = eng.create_collection(
                    "eval", dim=enc.dim, index=index_spec, durability="none"
                )
                t0 = time.perf_counter()
                for a in range(0, len(doc_ids), ADD_BATCH):
                    col.add(doc_ids[a : a + ADD_BATCH], docs[a : a + ADD_BATCH])
                t_index = time.perf_counter() - t0
                t0 = time.perf_counter()
                res = col.search_batch(qv, k=min(k, len(doc_ids)))
                t_search = time.perf_counter() - t0
                eng.drop_collection("eval")
            run = {
                q: [d for d in row if d is not None] for q, row in zip(qids, res.ids, strict=True)
            }
            row = {
                "encoder": spec,
                "index": col.index_spec,
                "split": split,
                **evaluate_run(run, qrels),
                "encode_s": t_enc,
                "index_s": t_index,
                "search_s": t_search,
            }
            rows.append(row)
            if log is not None:
                log(format_table([row]))
    return rows


def indexes_for(multi_vector: bool, indexes: Sequence[str], encoder: str) -> list[str]:
    """The index specs of ``indexes`` that fit an encoder's kind (``flat`` -> ``chamfer`` for a
    multi-vector one); raises ValueError when none does."""
    out = []
    for spec in indexes:
        kind = ix.parse_spec(spec)[0]
        if multi_vector and kind == "flat":
            out.append("chamfer")
        elif ix.spec.is_multivector(kind) == multi_vector:
            out.append(spec)
    if not out:
        want = "multi-vector (muvera, chamfer, token_ann)" if multi_vector else "single-vector"
        raise ValueError(
            f"encoder {encoder!r} needs a {want} index; got {', '.join(map(repr, indexes))}"
        )
    return out


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = f"{'encoder':<40} {'index':<40} {'nDCG@10':>8} {'R@100':>7} {'MRR@10':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{str(r['encoder'])[-40:]:<40} {str(r['index'])[:40]:<40} "
            f"{r['ndcg@10']:>8.4f} {r['recall@100']:>7.4f} {r['mrr@10']:>7.4f}"
        )
    return "\n".join(lines)
