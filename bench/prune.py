"""Token pruning on SciFact: nDCG@10 and tokens stored at several ``prune=`` ratios.

A subset of the corpus (every document judged for a test query plus ``--others`` drawn with a
seed) is encoded once with the token encoder (cached under ``bench/.cache/prune``), then one
``chamfer:prune=R`` collection is built per ratio and the test queries scored exactly (exhaustive
MaxSim). For reference, each ratio is also run with naive truncation (each document's first
``m`` tokens, the same count as pruning keeps). Writes ``bench/results/prune.json``.

    HF_HUB_OFFLINE=1 python -m bench.prune --others 1000 --ratios 0 0.3 0.5
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import ROOT, cache_dir, cached_token_sets, file_digest, json_default, log, machine_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_argument_group("data")
    g.add_argument("--data", type=Path, default=Path("/work/shared/data/scifact"))
    g.add_argument("--others", type=int, default=1000, help="unjudged documents added")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--encoder", default="token")
    g = ap.add_argument_group("runs")
    g.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.3, 0.5])
    g.add_argument("--index", default="chamfer", help="a multi-vector spec without prune=")
    g.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prune.json")
    args = ap.parse_args()

    import encoders
    from engine import Engine, beir
    from engine.metrics import evaluate_run
    from index.tokenprune import kept_counts

    corpus = beir.read_jsonl(args.data / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in beir.read_jsonl(args.data / "queries.jsonl")}
    qrels = beir.read_qrels(args.data / "qrels" / "test.tsv")
    judged = {d for rel in qrels.values() for d in rel}
    rng = np.random.default_rng(args.seed)
    rest = [i for i, d in enumerate(corpus) if d["_id"] not in judged]
    pick = sorted(rng.choice(len(rest), size=min(args.others, len(rest)), replace=False))
    docs = [d for d in corpus if d["_id"] in judged] + [corpus[rest[i]] for i in pick]
    ids = [d["_id"] for d in docs]
    qids = sorted(q for q in qrels if q in queries)

    enc: dict[str, Any] = {}

    def encoder() -> Any:
        if "e" not in enc:
            enc["e"] = encoders.load(args.encoder)
        return enc["e"]

    def pack(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        off = np.zeros(len(sets) + 1, dtype=np.int64)
        np.cumsum([s.shape[0] for s in sets], out=off[1:])
        return np.concatenate(sets).astype(np.float32), off

    digest = file_digest(args.data / "corpus.jsonl", args.data / "qrels" / "test.tsv")
    key = f"scifact-{args.encoder}-{digest}-others{args.others}-seed{args.seed}"
    where = cache_dir("prune")
    dt, doff, dmeta = cached_token_sets(
        where,
        key + "-docs",
        lambda: pack(encoder().encode_documents([beir.document_text(d) for d in docs])),
    )
    qt, qoff, _ = cached_token_sets(
        where, key + "-queries", lambda: pack(encoder().encode_queries([queries[q] for q in qids]))
    )
    dsets = np.split(dt.astype(np.float32), doff[1:-1])
    qsets = np.split(qt.astype(np.float32), qoff[1:-1])
    log(f"{len(dsets)} documents ({dt.shape[0]} tokens), {len(qsets)} queries; {dmeta}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp, Engine(tmp) as eng:
        for r in args.ratios:
            for method in ("kmeans", "truncate"):
                if method == "truncate" and r == 0:
                    continue
                spec = args.index + (f"{':' if ':' not in args.index else ','}prune={r}")
                sets = dsets
                if method == "truncate":
                    keep = kept_counts(np.diff(doff), r)
                    sets = [s[: int(m)] for s, m in zip(dsets, keep, strict=True)]
                    spec = args.index
                name = f"{method}-{r}".replace(".", "_")
                col = eng.create_collection(name, dim=dt.shape[1], index=spec)
                t0 = time.perf_counter()
                for a in range(0, len(sets), 256):
                    col.add(ids[a : a + 256], sets[a : a + 256])
                build = time.perf_counter() - t0
                t0 = time.perf_counter()
                res = col.search_batch(qsets, k=10)
                search = time.perf_counter() - t0
                run = {
                    q: [i for i in row if i is not None]
                    for q, row in zip(qids, res.ids, strict=True)
                }
                m = evaluate_run(run, qrels, ndcg_at=(10,), recall_at=(10,), mrr_at=())
                stored = sum(col.get([i])[0].vector.shape[0] for i in ids)
                row = {
                    "method": method,
                    "ratio": r,
                    "spec": col.index_spec,
                    "tokens_given": int(dt.shape[0]),
                    "tokens_stored": int(stored),
                    "stored_fraction": round(stored / dt.shape[0], 4),
                    "ndcg@10": round(m["ndcg@10"], 4),
                    "recall@10": round(m["recall@10"], 4),
                    "build_s": round(build, 2),
                    "search_s": round(search, 2),
                }
                log(json.dumps(row))
                rows.append(row)
                eng.drop_collection(name)
    out = {
        "bench": "prune",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "documents": len(dsets),
        "queries": len(qsets),
        "rows": rows,
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=json_default) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
