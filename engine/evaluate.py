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

import numpy as np

import index as ix

from . import beir, encoding
from .engine import Engine
from .fusion import Fusion, check_mode
from .metrics import evaluate_run as evaluate_run
from .metrics import mrr_at_k as mrr_at_k
from .metrics import ndcg_at_k as ndcg_at_k
from .metrics import recall_at_k as recall_at_k

ADD_BATCH = 4096  # documents per add() call when building an evaluation collection


FIT_WEIGHTS = tuple(round(0.05 * i, 2) for i in range(21))  # weighted: dense weight 0..1
FIT_RRF = tuple(
    (k, w) for k in (1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 100.0) for w in (0.3, 0.4, 0.5, 0.6, 0.7)
)


def evaluate_beir(
    directory: str | Path,
    *,
    split: str = "test",
    encoders_: Sequence[str] = ("default",),
    indexes: Sequence[str] = ("flat",),
    k: int = 100,
    modes: Sequence[str] = ("dense",),
    fusion: Fusion | None = None,
    fit_fusion: str | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Builds a collection per (encoder, index) from a BEIR corpus and scores the split's queries.

    The corpus is encoded once per encoder; each index is then built from those vectors.
    Multi-vector (token) encoders pair with the multi-vector index specs (``muvera...``,
    ``chamfer`` = exhaustive exact MaxSim, ``token_ann``) and single-vector encoders with the
    others; for a multi-vector encoder ``flat`` (the exact oracle) means ``chamfer``. Pairs of
    different kinds are skipped, so ``--encoder default token --index flat muvera`` compares
    both kinds in one run; an encoder left with no index raises.

    Args:
        modes: any of ``dense``, ``lexical`` (BM25 over the documents' title + text) and
            ``hybrid`` (fused with ``fusion``, default the library's): one row per mode.
        fit_fusion: a split (e.g. ``train``) whose judged queries choose the fusion (method
            and weight / rrf_k, by nDCG@10 over a grid); adds a ``hybrid (fitted)`` row scored
            on ``split``. It must not be ``split`` itself: nothing is tuned on what is scored.

    Returns:
        One row per (encoder, index, mode): metrics plus timings (encode, index, search
        seconds); a fitted row also carries the chosen fusion and its score on the fit split.
    """
    directory = Path(directory)
    modes = [check_mode(m) for m in modes] or ["dense"]
    fusion = fusion or Fusion()
    if fit_fusion is not None and fit_fusion == split:
        raise ValueError(
            f"--fit-fusion {fit_fusion!r} is the split being scored: fit on another split "
            "(e.g. train) so that nothing is tuned on the figures reported"
        )
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise ValueError(f"{qrels_path} does not exist (is {directory} a BEIR directory?)")
    qrels = beir.read_qrels(qrels_path)
    fit_qrels: dict[str, dict[str, int]] = {}
    if fit_fusion is not None:
        fit_path = directory / "qrels" / f"{fit_fusion}.tsv"
        if not fit_path.is_file():
            raise ValueError(f"{fit_path} does not exist: no {fit_fusion!r} split to fit on")
        fit_qrels = beir.read_qrels(fit_path)
    corpus = beir.read_jsonl(directory / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in beir.read_jsonl(directory / "queries.jsonl")}
    qids = [q for q in qrels if q in queries]
    fit_qids = [q for q in fit_qrels if q in queries]
    doc_ids = [d["_id"] for d in corpus]
    doc_texts = [beir.document_text(d) for d in corpus]
    lexical = any(m != "dense" for m in modes) or fit_fusion is not None
    plan = []
    for spec in encoders_:
        enc = encoding.resolve(spec)
        plan.append((spec, enc, indexes_for(enc.multi_vector, indexes, spec)))
    rows = []
    for spec, enc, enc_indexes in plan:
        t0 = time.perf_counter()
        docs = enc.encode_documents(doc_texts)
        qv = enc.encode_queries([queries[q] for q in qids])
        fit_qv = enc.encode_queries([queries[q] for q in fit_qids]) if fit_qids else None
        t_enc = time.perf_counter() - t0
        for index_spec in enc_indexes:
            with tempfile.TemporaryDirectory(prefix="vecdex-eval-") as tmp:
                # A throw-away collection: no fsync, no checkpoint, dropped at the end.
                eng = Engine(tmp, checkpoint_bytes=1 << 62)
                col = eng.create_collection(
                    "eval", dim=enc.dim, index=index_spec, durability="none", lexical=lexical
                )
                t0 = time.perf_counter()
                for a in range(0, len(doc_ids), ADD_BATCH):
                    b = a + ADD_BATCH
                    col.add(doc_ids[a:b], docs[a:b], texts=doc_texts[a:b] if lexical else None)
                if lexical:
                    col.flush()  # BM25 statistics exact over the whole corpus
                t_index = time.perf_counter() - t0
                texts = [queries[q] for q in qids]
                for mode in modes:
                    t0 = time.perf_counter()
                    res = _search(col, qv, texts, min(k, len(doc_ids)), mode, fusion)
                    t_search = time.perf_counter() - t0
                    row = {
                        "encoder": spec,
                        "index": col.index_spec,
                        "mode": mode if mode != "hybrid" else f"hybrid {describe(fusion)}",
                        "split": split,
                        **evaluate_run(_run(qids, res.ids), qrels),
                        "encode_s": t_enc,
                        "index_s": t_index,
                        "search_s": t_search,
                    }
                    rows.append(row)
                    if log is not None:
                        log(format_table([row]))
                if fit_fusion is not None:
                    fit_texts = [queries[q] for q in fit_qids]
                    best, fit_score = fit(col, fit_qv, fit_texts, fit_qids, fit_qrels, fusion.depth)
                    t0 = time.perf_counter()
                    res = _search(col, qv, texts, min(k, len(doc_ids)), "hybrid", best)
                    row = {
                        "encoder": spec,
                        "index": col.index_spec,
                        "mode": f"hybrid {describe(best)} (fitted on {fit_fusion})",
                        "split": split,
                        **evaluate_run(_run(qids, res.ids), qrels),
                        "fusion": best.to_dict(),
                        f"{fit_fusion} ndcg@10": fit_score,
                        "encode_s": t_enc,
                        "index_s": t_index,
                        "search_s": time.perf_counter() - t0,
                    }
                    rows.append(row)
                    if log is not None:
                        log(format_table([row]))
                eng.drop_collection("eval")
    return rows


def _search(col: Any, qv: Any, texts: list[str], k: int, mode: str, fusion: Fusion) -> Any:
    if mode == "dense":
        return col.search_batch(qv, k=k)
    if mode == "lexical":
        return col.search_batch(None, k=k, mode="lexical", texts=texts)
    return col.search_batch(
        qv,
        k=k,
        mode="hybrid",
        texts=texts,
        fusion=fusion.method,
        weight=fusion.weight,
        rrf_k=fusion.rrf_k,
        depth=fusion.depth,
    )


def _run(qids: Sequence[str], ids: Any) -> dict[str, list[str]]:
    return {q: [d for d in row if d is not None] for q, row in zip(qids, ids, strict=True)}


def describe(f: Fusion) -> str:
    if f.method == "rrf":
        return f"rrf k={f.rrf_k:g} w={f.weight:g}"
    return f"{f.method} w={f.weight:g}"


def fit(
    col: Any,
    qv: Any,
    texts: list[str],
    qids: list[str],
    qrels: Mapping[str, Mapping[str, int]],
    depth: int,
) -> tuple[Fusion, float]:
    """The fusion (``dbsf`` and ``weighted`` over FIT_WEIGHTS, ``rrf`` over FIT_RRF) with the
    best mean nDCG@10 on the given judged queries, and that score. Each side is searched once to
    ``depth``; the grid re-fuses those rankings (``Fusion.fuse``, as a hybrid search does)."""
    if not qids:
        raise ValueError("no judged query to fit the fusion on")
    dense = col.search_batch(qv, k=depth)
    lexical = col.search_batch(None, k=depth, mode="lexical", texts=texts)
    number: dict[str, int] = {}

    def labels(ids: Any) -> Any:
        out = np.full(ids.shape, -1, dtype=np.int64)
        for (i, j), d in np.ndenumerate(ids):
            if d is not None:
                out[i, j] = number.setdefault(d, len(number))
        return out

    d = (dense.scores, labels(dense.ids))
    lx = (lexical.scores, labels(lexical.ids))
    name = np.array(list(number), dtype=object)
    grid = [Fusion.make(m, w, depth=depth) for m in ("dbsf", "weighted") for w in FIT_WEIGHTS]
    grid += [Fusion.make("rrf", w, k, depth) for k, w in FIT_RRF]
    best: tuple[float, Fusion] | None = None
    for f in grid:
        _, fused = f.fuse(d, lx, 10)
        run = {q: [str(name[x]) for x in row if x >= 0] for q, row in zip(qids, fused, strict=True)}
        score = evaluate_run(run, qrels)["ndcg@10"]
        if best is None or score > best[0] + 1e-12:
            best = (score, f)
    assert best is not None
    return best[1], best[0]


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
    head = f"{'encoder':<28} {'index':<24} {'mode':<40} {'nDCG@10':>8} {'R@100':>7} {'MRR@10':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{str(r['encoder'])[-28:]:<28} {str(r['index'])[:24]:<24} "
            f"{str(r.get('mode', 'dense'))[:40]:<40} "
            f"{r['ndcg@10']:>8.4f} {r['recall@100']:>7.4f} {r['mrr@10']:>7.4f}"
        )
    return "\n".join(lines)
