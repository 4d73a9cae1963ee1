"""The document length a trained token encoder encodes at, chosen on SciFact's train queries.

A token encoder cuts documents at ``doc_max_len`` tokens (256 by default, the length it is trained
at). 71% of SciFact's abstracts are longer than 256 MiniLM tokens (median 316) and 9% longer than
512, the model's position limit, so the cut drops text that MaxSim could match. This benchmark
scores exact MaxSim (exhaustive, every document) with the same trained model at each length asked,
on the train queries (where the length is chosen: the best nDCG@10) and on the test queries (the
report), plus the tokens stored and the corpus encoding time.

``--windows`` also measures the next step past the position limit: documents over 512 tokens get a
second window (their text from 64 tokens before the cut, re-encoded; both windows' tokens kept).

``python -m bench.token_doclen --token-model bench/.cache/encoders/models/token-a6b025ebe9``
writes bench/results/token_doclen.json (document tokens cached by model, length and data: about
4 minutes a length to encode the first time, 6 minutes a length to score).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import RESULTS, SCIFACT, cached_token_sets, log, pack, write_choice_report
from .encoders import CACHE, maxsim_metrics, token_key

WINDOW_OVERLAP = 64


def second_windows(enc: Any, texts: list[str], dt: np.ndarray, doff: np.ndarray):
    """The token sets with a second window appended to each document past the position limit."""
    body = enc.doc_max_len - 3  # [CLS], [D], [SEP]
    tails, who = [], []
    for i, text in enumerate(texts):
        ids = enc.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > body:
            tails.append(enc.tokenizer.decode(ids[body - WINDOW_OVERLAP :]))
            who.append(i)
    sets = [dt[a:b] for a, b in zip(doff[:-1], doff[1:], strict=True)]
    for i, vecs in zip(who, enc.encode_documents(tails), strict=True):
        sets[i] = np.concatenate([sets[i], vecs.astype(dt.dtype)])
    tokens, offsets = pack(sets, dt.dtype)
    return tokens, offsets, len(who)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--token-model", required=True, help="a trained token encoder's directory")
    p.add_argument("--lengths", default="256,512", help="document lengths measured")
    p.add_argument("--windows", action="store_true", help="also: a second window past 512")
    p.add_argument("--data", type=Path, default=SCIFACT)
    p.add_argument("--out", type=Path, default=RESULTS / "token_doclen.json")
    args = p.parse_args(argv)

    import encoders
    from engine import beir

    t_start = time.time()
    corpus = beir.read_jsonl(args.data / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in beir.read_jsonl(args.data / "queries.jsonl")}
    texts = [beir.document_text(d) for d in corpus]
    splits = {}
    for name in ("train", "test"):
        qrels = beir.read_qrels(args.data / "qrels" / f"{name}.tsv")
        splits[name] = (qrels, [q for q in qrels if q in queries])

    rows: dict[str, Any] = {}

    def score(label: str, enc: Any, dt: np.ndarray, doff: np.ndarray, extra: dict) -> None:
        row: dict[str, Any] = {"doc_tokens": int(doff[-1]), **extra}
        for name, (qrels, qids) in splits.items():
            m = maxsim_metrics(enc, dt, doff, corpus, queries, qids, qrels)
            row[name] = {k: round(v, 4) for k, v in m.items() if k in ("ndcg@10", "recall@100")}
        log(f"{label}: {row}")
        rows[label] = row

    lengths = [int(x) for x in args.lengths.split(",")]
    for length in lengths:
        enc = encoders.load(args.token_model, doc_max_len=length)
        dt, doff, meta = cached_token_sets(
            CACHE,
            token_key(enc, args.data, args.token_model),
            lambda e=enc: pack(e.encode_documents(texts)),
        )
        # The encoding time is the one measured when the tokens were cached (with its load).
        when = {k: meta.get(k) for k in ("compute_s", "load_average_when_computed", "cached")}
        score(str(length), enc, dt, doff, {"corpus_encode": when})
        if args.windows and length == max(lengths):
            t0 = time.perf_counter()
            dt2, doff2, n_long = second_windows(enc, texts, dt, doff)
            extra = {"documents_with_a_second_window": n_long}
            extra["second_window_encode_s"] = round(time.perf_counter() - t0, 1)
            score(f"{length}+window", enc, dt2, doff2, extra)

    chosen = max(rows, key=lambda k: rows[k]["train"]["ndcg@10"])
    out = {
        "benchmark": "token_doclen",
        "command": "python -m bench.token_doclen " + " ".join(argv or []),
        "token_model": args.token_model,
        "search": "exact MaxSim over all documents",
        "queries": {k: len(v[1]) for k, v in splits.items()},
        "rows": rows,
        "chosen_on_train": chosen,
        "chosen_test": rows[chosen]["test"],
        "note": "the length is chosen on train queries (best nDCG@10); test is the report",
    }
    write_choice_report(args.out, out, t_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
