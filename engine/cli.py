"""The ``vecdex`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import demo
from .engine import Engine


def _info(args: argparse.Namespace) -> int:
    # Read-only: no writer lock, so `info` works while a server holds the collections.
    eng = Engine(args.data, read_only=True)
    names = [args.collection] if args.collection else eng.list_collections()
    print(json.dumps([eng.open_collection(n).describe() for n in names], indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_beir, format_table

    rows = evaluate_beir(
        args.beir_dir, split=args.split, encoders_=args.encoder, indexes=args.index, k=args.k
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from encoders.train import TrainConfig, train

    from . import training
    from .encoding import resolve

    examples: list = []
    corpus: dict[str, str] = {}
    if args.beir:
        ex, corpus = training.beir_examples(args.beir, args.split)
        examples += ex
    if args.pairs:
        examples += training.file_examples(args.pairs)
    if args.unsupervised:
        if not args.beir:
            raise ValueError("--unsupervised needs --beir DIR (its corpus.jsonl)")
        from . import beir

        examples += training.corpus_examples(
            beir.read_jsonl(f"{args.beir}/corpus.jsonl"), seed=args.seed
        )
    if not examples:
        raise ValueError("no training data: give --beir DIR, --pairs FILE and/or --unsupervised")
    encoder = resolve(args.encoder)
    miner = None
    if args.hard_negatives:
        if not corpus:
            raise ValueError("--hard-negatives needs a corpus: give --beir DIR")
        miner = training.make_miner(
            corpus, depth=args.mine_depth, margin=args.mine_margin, seed=args.seed
        )
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        seed=args.seed,
        matryoshka_dims=tuple(int(d) for d in args.matryoshka.split(","))
        if args.matryoshka
        else (),
        train_layers=args.train_layers,
        refresh_negatives=args.refresh_negatives,
        checkpoint_dir=args.out + "/checkpoints" if args.checkpoints else None,
    )
    print(f"training {encoder} on {len(examples)} examples")
    bar = tqdm(total=None, disable=args.quiet, desc="train", unit="step")

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.update(1)

    losses = train(encoder, examples, config, miner=miner, progress=progress)
    bar.close()
    encoder.save(args.out)
    first, last = (
        sum(losses[:5]) / max(1, len(losses[:5])),
        sum(losses[-5:]) / max(1, len(losses[-5:])),
    )
    print(f"saved {args.out} (loss {first:.4f} -> {last:.4f}); use it as encoder={args.out!r}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    # Only this handler imports the server package (DESIGN: nothing else does).
    from server import Limits, ServerConfig
    from server.app import run

    token = args.token if args.token is not None else os.environ.get("VECDEX_TOKEN") or None
    config = ServerConfig(
        data=args.data,
        host=args.host,
        port=args.port,
        token=token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        workers=args.workers,
        search_concurrency=args.search_concurrency,
        grace_s=args.grace,
        limits=Limits(max_message_bytes=args.max_message_mb << 20, max_k=args.max_k),
    )

    def ready(port: int) -> None:
        scheme = "tls" if config.tls_cert else "plaintext"
        auth = "token required" if token else "no token"
        print(f"vecdex: serving {args.data} on {args.host}:{port} ({scheme}, {auth})", flush=True)

    run(config, on_ready=ready)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vecdex", description="Embedding retrieval and vector search.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="index the bundled sample corpus, search it, reopen it")
    d.add_argument("--data", help="directory for the collections (default: a temporary one)")
    d.set_defaults(func=lambda a: demo.run(a.data) and 0)

    i = sub.add_parser("info", help="describe the collections in a data directory")
    i.add_argument("--data", required=True)
    i.add_argument("--collection")
    i.set_defaults(func=_info)
    e = sub.add_parser("eval", help="nDCG@10 / recall@100 / MRR@10 on a BEIR directory")
    e.add_argument("beir_dir")
    e.add_argument("--split", default="test")
    e.add_argument("--encoder", nargs="+", default=["default"], help="encoder spec(s)")
    e.add_argument("--index", nargs="+", default=["flat"], help="index spec(s)")
    e.add_argument("-k", type=int, default=100, help="depth retrieved per query")
    e.add_argument("--json", help="write the rows as JSON here")
    e.set_defaults(func=_eval)

    t = sub.add_parser("train", help="contrastive training of an encoder on your data")
    t.add_argument("--encoder", default="default", help="default, token[:...] or a model dir")
    t.add_argument("--out", required=True, help="directory for the trained model")
    src = t.add_argument_group("data")
    src.add_argument("--beir", help="BEIR directory: pairs from qrels/<split>.tsv")
    src.add_argument("--split", default="train")
    src.add_argument("--pairs", help="JSONL or Parquet with query, positive[, negative]")
    src.add_argument("--unsupervised", action="store_true", help="title->text and span pairs")
    hp = t.add_argument_group("training")
    hp.add_argument("--epochs", type=int, default=1)
    hp.add_argument("--batch-size", type=int, default=32)
    hp.add_argument("--lr", type=float, default=2e-5)
    hp.add_argument("--temperature", type=float, default=0.05)
    hp.add_argument("--matryoshka", help="comma-separated dims, e.g. 384,256,128")
    hp.add_argument("--train-layers", type=int, default=2, help="token encoder: top layers trained")
    hp.add_argument("--seed", type=int, default=0)
    hp.add_argument("--checkpoints", action="store_true", help="save a checkpoint each epoch")
    mine = t.add_argument_group("hard negatives")
    mine.add_argument("--hard-negatives", action="store_true", help="mine with vecdex's index")
    mine.add_argument("--refresh-negatives", action="store_true", help="re-mine every epoch")
    mine.add_argument("--mine-depth", type=int, default=30)
    mine.add_argument("--mine-margin", type=float, default=0.95)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    s = sub.add_parser("serve", help="serve a data directory over gRPC (vecdex.v1.VecDex)")
    s.add_argument("--data", required=True, help="the data directory")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    s.add_argument("--token", help="bearer token every rpc but health needs ($VECDEX_TOKEN)")
    s.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    s.add_argument("--tls-key", help="PEM private key")
    s.add_argument("--insecure", action="store_true", help="allow a non-loopback bind w/o token")
    s.add_argument("--max-batch", type=int, default=64, help="Search calls per batch; 1 = off")
    s.add_argument("--max-wait-ms", type=float, default=0.0, help="batching window (0: none)")
    s.add_argument("--search-concurrency", type=int, default=2, help="searches run at once")
    s.add_argument("--workers", type=int, default=8, help="threads for engine calls")
    s.add_argument("--grace", type=float, default=10.0, help="shutdown drain, seconds")
    s.add_argument("--max-message-mb", type=int, default=64, help="largest message")
    s.add_argument("--max-k", type=int, default=1000, help="largest k")
    s.set_defaults(func=_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ValueError, LookupError, OSError) as e:
        print(f"vecdex: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
