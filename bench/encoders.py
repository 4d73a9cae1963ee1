"""Encoders on SciFact: harness check, encoding throughput vs raw sentence-transformers, and
contrastive training evaluated on the test split.

    python -m bench.encoders --data ../shared/data/scifact              # harness + throughput
    python -m bench.encoders --train --epochs 1 --lr 2e-5               # + training run
    python -m bench.encoders --skip-harness --skip-throughput --token   # untrained token encoder
    python -m bench.encoders --skip-harness --skip-throughput --train-token   # MaxSim training

Embeddings are cached under bench/.cache (keyed by model, data and settings); results go to
bench/results/encoders.json (merged: each stage updates its own key).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from encoders import SentenceEncoder, TokenEncoder  # noqa: E402
from encoders.train import TrainConfig, train  # noqa: E402
from engine import beir, training  # noqa: E402
from engine.evaluate import evaluate_run  # noqa: E402
from index import FlatIndex  # noqa: E402
from index.scoring import chamfer_topk  # noqa: E402

from .common import (  # noqa: E402
    CACHE_ROOT,
    RESULTS,
    SCIFACT,
    cached_array,
    cached_token_sets,
    file_digest,
    machine_info,
    pack,
)

CACHE = CACHE_ROOT / "encoders"
RESULT = RESULTS / "encoders.json"


def cached(key: str, compute) -> np.ndarray:
    return cached_array(CACHE / f"{key}.npy", compute)[0]


def embedding_key(enc: SentenceEncoder, data: Path) -> str:
    """Cache key: model, corpus contents and sequence length."""
    digest = file_digest(data / "corpus.jsonl")
    return f"{Path(enc.name).name}-{digest}-{enc.model.max_seq_length}"


def load(data: Path):
    corpus = beir.read_jsonl(data / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in beir.read_jsonl(data / "queries.jsonl")}
    qrels = beir.read_qrels(data / "qrels" / "test.tsv")
    qids = [q for q in qrels if q in queries]
    return corpus, queries, qrels, qids


def exact_metrics(doc_vecs, q_vecs, doc_ids, qids, qrels) -> dict[str, float]:
    idx = FlatIndex(doc_vecs.shape[1], metric="ip")
    idx.add(doc_vecs, np.arange(len(doc_ids)))
    _, labels = idx.search(q_vecs, 100)
    run = {q: [doc_ids[i] for i in row if i >= 0] for q, row in zip(qids, labels, strict=True)}
    return evaluate_run(run, qrels)


def harness(args, enc: SentenceEncoder, corpus, queries, qrels, qids) -> dict[str, Any]:
    texts = [beir.document_text(d) for d in corpus]
    key = embedding_key(enc, args.data)
    t0 = time.perf_counter()
    docs = cached(f"docs-{key}", lambda: enc.encode_documents(texts))
    t_docs = time.perf_counter() - t0
    q = enc.encode_queries([queries[i] for i in qids])
    m = exact_metrics(docs, q, [d["_id"] for d in corpus], qids, qrels)
    return {
        "encoder": enc.name,
        **m,
        "corpus_encode_s_or_cache": t_docs,
        "published_ndcg@10": 0.645,
    }


def throughput(args, enc: SentenceEncoder, corpus) -> dict[str, Any]:
    texts = [beir.document_text(d) for d in corpus[: args.throughput_docs]]
    raw = enc.model
    ours, theirs = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        raw.encode(
            texts,
            batch_size=enc.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        theirs.append(len(texts) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        enc.encode_documents(texts)
        ours.append(len(texts) / (time.perf_counter() - t0))
    out: dict[str, Any] = {
        "docs": len(texts),
        "vecdex_docs_per_s": statistics.median(ours),
        "raw_sentence_transformers_docs_per_s": statistics.median(theirs),
    }
    out["ratio"] = out["vecdex_docs_per_s"] / out["raw_sentence_transformers_docs_per_s"]
    out["target"] = ">= 0.95"
    out["pass"] = out["ratio"] >= 0.95
    return out


# ---- multi-vector ------------------------------------------------------------------------------
def cached_tokens(key: str, compute) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Document token sets under bench/.cache (see ``bench.common.cached_token_sets``); also
    the seconds the encoding took (None when read from the cache)."""
    tokens, offsets, meta = cached_token_sets(CACHE, key, lambda: pack(compute()))
    return tokens, offsets, None if meta["cached"] else meta["compute_s"]


def token_key(enc: TokenEncoder, data: Path, model: str) -> str:
    conf = {k: v for k, v in enc.config().items() if k != "query_augment"}  # docs only
    digest = hashlib.sha1(json.dumps([model, conf], sort_keys=True).encode()).hexdigest()[:10]
    return f"tokens-{digest}-{file_digest(data / 'corpus.jsonl')}"


def maxsim_metrics(enc: TokenEncoder, dt, doff, corpus, queries, qids, qrels) -> dict[str, float]:
    """Exhaustive exact MaxSim (Chamfer) over the whole corpus, then BEIR metrics."""
    q, qoff = pack(enc.encode_queries([queries[i] for i in qids]))
    _, rows = chamfer_topk(q, qoff, dt, doff, 100)
    doc_ids = [d["_id"] for d in corpus]
    run = {qid: [doc_ids[i] for i in row if i >= 0] for qid, row in zip(qids, rows, strict=True)}
    return evaluate_run(run, qrels)


def token_docs_per_s(enc: TokenEncoder, corpus, n: int) -> float:
    texts = [beir.document_text(d) for d in corpus[:n]]
    enc.encode_documents(texts[:8])  # warm-up
    t0 = time.perf_counter()
    enc.encode_documents(texts)
    return len(texts) / (time.perf_counter() - t0)


def token_eval(args, enc: TokenEncoder, model: str, corpus, queries, qrels, qids):
    texts = [beir.document_text(d) for d in corpus]
    dt, doff, secs = cached_tokens(
        token_key(enc, args.data, model), lambda: enc.encode_documents(texts)
    )
    out: dict[str, Any] = {"encoder": enc.name, "config": enc.config()}
    out.update(maxsim_metrics(enc, dt, doff, corpus, queries, qids, qrels))
    out["doc_tokens"] = int(doff[-1])
    out["corpus_encode_s"] = secs
    out["docs_per_s"] = token_docs_per_s(enc, corpus, args.throughput_docs)
    out["docs_per_s_texts"] = args.throughput_docs
    return out, dt, doff


def token_untrained(args, corpus, queries, qrels, qids) -> dict[str, Any]:
    """The untrained default (``encoders.load("token")``) with exact MaxSim, and the same
    document tokens scored with [MASK]-augmented queries (the former default)."""
    enc = TokenEncoder("default")
    out, dt, doff = token_eval(args, enc, "default", corpus, queries, qrels, qids)
    enc.query_augment = True
    out["with_query_augment"] = maxsim_metrics(enc, dt, doff, corpus, queries, qids, qrels)
    out["search"] = "exact MaxSim over all documents"
    out["target_ndcg@10"] = 0.70
    return out


def train_token_run(args, corpus, queries, qrels, qids) -> dict[str, Any]:
    """MaxSim InfoNCE on the train qrels: projection head + top layers, MiniLM-mined negatives."""
    examples, corpus_map = training.beir_examples(args.data, "train")
    recipe = {
        "epochs": args.token_epochs,
        "batch_size": args.token_batch_size,
        "lr": args.token_lr,
        "head_lr": args.token_head_lr,
        "train_layers": args.token_train_layers,
        "temperature": args.token_temperature,
        "query_augment": args.token_query_augment,
        "hard_negatives": not args.no_hard_negatives,
        "mine_depth": args.mine_depth,
        "mine_margin": args.mine_margin,
        "seed": args.seed,
    }
    enc = TokenEncoder("default", query_augment=args.token_query_augment, seed=args.seed)
    miner = None
    if not args.no_hard_negatives:
        base = SentenceEncoder("default")
        key = embedding_key(base, args.data)
        first = cached(f"docs-{key}", lambda: base.encode_documents(list(corpus_map.values())))
        del base
        miner = hard_negative_miner(args, corpus_map, first)
    cfg = TrainConfig(
        epochs=args.token_epochs,
        batch_size=args.token_batch_size,
        lr=args.token_lr,
        head_lr=args.token_head_lr,
        temperature=args.token_temperature,
        train_layers=args.token_train_layers,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    losses = train(enc, examples, cfg, miner=miner, progress=progress_printer())
    t_train = time.perf_counter() - t0
    digest = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    out_dir = CACHE / "models" / f"token-{digest}"
    enc.save(out_dir)
    m, _, _ = token_eval(args, enc, str(out_dir), corpus, queries, qrels, qids)
    return {
        "recipe": recipe,
        "examples": len(examples),
        "train_s": t_train,
        "model": str(out_dir),
        "loss_first": float(np.mean(losses[:5])),
        "loss_last": float(np.mean(losses[-5:])),
        **m,
        "search": "exact MaxSim over all documents",
        "target_ndcg@10": 0.70,
    }


def progress_printer():
    last = [time.perf_counter()]

    def progress(step: int, total: int, loss: float) -> None:
        if step % 5 == 0 or step == total:
            now = time.perf_counter()
            print(f"step {step}/{total} loss {loss:.4f} ({now - last[0]:.0f}s)", flush=True)
            last[0] = now

    return progress


def hard_negative_miner(args, corpus_map: dict[str, str], first: np.ndarray):
    """The miner both training stages use: the default model's top non-positives."""
    return training.make_miner(
        corpus_map,
        depth=args.mine_depth,
        margin=args.mine_margin,
        seed=args.seed,
        first_doc_vectors=first,
    )


def train_run(args, corpus, queries, qrels, qids) -> dict[str, Any]:
    examples, corpus_map = training.beir_examples(args.data, "train")
    base = SentenceEncoder("default")
    key = embedding_key(base, args.data)
    first = cached(f"docs-{key}", lambda: base.encode_documents(list(corpus_map.values())))
    recipe = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "temperature": args.temperature,
        "hard_negatives": not args.no_hard_negatives,
        "refresh_negatives": args.refresh,
        "mine_depth": args.mine_depth,
        "mine_margin": args.mine_margin,
        "unsupervised": args.unsupervised,
        "seed": args.seed,
    }
    if args.unsupervised:
        examples = examples + training.corpus_examples(corpus, seed=args.seed)
    miner = None if args.no_hard_negatives else hard_negative_miner(args, corpus_map, first)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        seed=args.seed,
        refresh_negatives=args.refresh,
    )
    t0 = time.perf_counter()
    losses = train(base, examples, cfg, miner=miner, progress=progress_printer())
    t_train = time.perf_counter() - t0
    out_dir = (
        CACHE
        / "models"
        / hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    )
    base.save(out_dir)
    docs = base.encode_documents([beir.document_text(d) for d in corpus])
    q = base.encode_queries([queries[i] for i in qids])
    m = exact_metrics(docs, q, [d["_id"] for d in corpus], qids, qrels)
    return {
        "recipe": recipe,
        "examples": len(examples),
        "train_s": t_train,
        "model": str(out_dir),
        "loss_first": float(np.mean(losses[:10])),
        "loss_last": float(np.mean(losses[-10:])),
        **m,
        "target_ndcg@10": 0.69,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=SCIFACT)
    g = p.add_argument_group("stages")
    g.add_argument("--skip-harness", action="store_true")
    g.add_argument("--skip-throughput", action="store_true")
    g.add_argument("--train", action="store_true", help="fine-tune on the train split")
    g.add_argument(
        "--token", action="store_true", help="untrained token encoder: exact MaxSim, docs/s"
    )
    g.add_argument(
        "--train-token", action="store_true", help="MaxSim training of the token encoder"
    )
    t = p.add_argument_group("throughput")
    t.add_argument("--throughput-docs", type=int, default=512)
    t.add_argument("--repeats", type=int, default=3)
    tr = p.add_argument_group("training")
    tr.add_argument("--epochs", type=int, default=1)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--lr", type=float, default=2e-5)
    tr.add_argument("--temperature", type=float, default=0.05)
    tr.add_argument("--no-hard-negatives", action="store_true")
    tr.add_argument("--refresh", action="store_true")
    tr.add_argument("--mine-depth", type=int, default=30)
    tr.add_argument("--mine-margin", type=float, default=0.95)
    tr.add_argument("--unsupervised", action="store_true")
    tr.add_argument("--seed", type=int, default=0)
    tt = p.add_argument_group("token training (hard-negative options shared with training)")
    tt.add_argument("--token-epochs", type=int, default=1)
    tt.add_argument("--token-batch-size", type=int, default=32)
    tt.add_argument("--token-lr", type=float, default=3e-5, help="top transformer layers")
    tt.add_argument("--token-head-lr", type=float, default=1e-3, help="projection head")
    tt.add_argument("--token-train-layers", type=int, default=2)
    tt.add_argument("--token-temperature", type=float, default=0.05)
    tt.add_argument("--token-query-augment", action="store_true", help="[MASK] query padding")
    args = p.parse_args()

    results: dict[str, Any] = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    results["machine"] = machine_info(("sentence-transformers", "transformers"))
    corpus, queries, qrels, qids = load(args.data)
    enc = SentenceEncoder("default")
    if not args.skip_harness:
        results["harness"] = harness(args, enc, corpus, queries, qrels, qids)
        print(json.dumps(results["harness"], indent=2), flush=True)
    if not args.skip_throughput:
        results["throughput"] = throughput(args, enc, corpus)
        print(json.dumps(results["throughput"], indent=2), flush=True)
    if args.train:
        run = train_run(args, corpus, queries, qrels, qids)
        results.setdefault("training_runs", []).append(run)
        print(json.dumps(run, indent=2), flush=True)
    if args.token:
        results["token"] = token_untrained(args, corpus, queries, qrels, qids)
        print(json.dumps(results["token"], indent=2), flush=True)
    if args.train_token:
        run = train_token_run(args, corpus, queries, qrels, qids)
        results.setdefault("token_training_runs", []).append(run)
        print(json.dumps(run, indent=2), flush=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
