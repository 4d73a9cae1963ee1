"""The ``vecdex`` command line."""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import sys
import time
from typing import Any

from index import storage

from . import demo, shards
from .checkpoint import verify as verify_checkpoint
from .engine import Engine
from .errors import CollectionNotFoundError


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


def _info(args: argparse.Namespace) -> int:
    # Read-only: no writer lock, so `info` works while a server holds the collections.
    eng = Engine(args.data, read_only=True)
    names = [args.collection] if args.collection else eng.list_collections()
    rows = []
    for n in names:
        col = eng.open_collection(n)
        d = col.describe()
        state = (col.marker or {}).get("ingest")
        if isinstance(state, dict):
            d["last_index_run"] = {
                "input": state.get("run", {}).get("input", {}).get("path"),
                "rows": state.get("rows"),
                "done": state.get("done"),
            }
        rows.append(d)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no collections in {args.data}")
    for d in rows:
        kind = "multi-vector" if d.get("multi_vector") else "vectors"
        print(f"{d['name']}: {d['count']:,} items, {_size(d['bytes_on_disk'])} on disk")
        print(f"  dim {d['dim']} ({kind}), metric {d['metric']}, index {d['index']}")
        print(f"  encoder {d.get('encoder') or '(none: vectors given directly)'}")
        if d.get("shards"):
            counts = ", ".join(f"{p['count']:,}" for p in d["per_shard"])
            print(f"  {d['shards']} shards by id hash, {d['hosted']} ({counts} items)")
        lex = d.get("lexical")
        if lex:
            source = f"payload field {d['text_field']!r}" if d.get("text_field") else "texts"
            print(
                f"  lexical BM25 of {source}: {d.get('lexical_count', 0):,} documents "
                f"(stemmer {lex['language']}, stopwords {lex['stopwords']}, k1 {lex['k1']:g}, "
                f"b {lex['b']:g}); hybrid fusion {d['fusion']['method']} "
                f"(weight {d['fusion']['weight']:g})"
            )
        run = d.get("last_index_run")
        if run:
            status = "complete" if run["done"] else f"unfinished at row {run['rows']:,}"
            print(f"  last `vecdex index`: {run['input']} ({status})")
        if d.get("memory"):
            _memory_table(d["memory"])
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Hashes every file of each collection; exit status 1 names the first corrupted one."""
    eng = Engine(args.data, read_only=True)
    names = eng.list_collections()
    if args.collection:
        if args.collection not in names:
            raise CollectionNotFoundError(args.collection)
        names = [args.collection]
    bad = 0
    for n in names:
        start = time.perf_counter()
        path = eng.path / n
        try:
            if shards.is_sharded(path):  # each shard is an ordinary collection directory
                manifest = shards.read_manifest(path)
                parts = [path / shards.shard_name(i) for i in range(manifest["shards"])]
                checked = sum(verify_checkpoint(part) for part in parts)
            else:
                checked = verify_checkpoint(path)
        except storage.CorruptFileError as e:
            print(f"{n}: CORRUPT: {e}")
            bad += 1
            continue
        print(f"{n}: ok, {_size(checked)} checked in {time.perf_counter() - start:.1f} s")
    return 1 if bad else 0


def _memory_table(memory: dict[str, Any]) -> None:
    """Bytes per component (index and lexical parts indented below them), RAM and disk."""
    print(f"  {'component':<22}{'RAM':>12}{'disk':>12}")
    ram = disk = 0
    for name, c in memory.items():
        print(f"  {name:<22}{_size(c['ram']):>12}{_size(c['disk']):>12}")
        ram, disk = ram + c["ram"], disk + c["disk"]
        for part, u in c.get("parts", {}).items():
            print(f"    {part:<20}{_size(u['ram']):>12}{_size(u['disk']):>12}")
    print(f"  {'total':<22}{_size(ram):>12}{_size(disk):>12}")


def _pin_mmap_threshold() -> None:
    """Keeps large allocations in their own mappings, returned to the OS when freed.

    glibc raises its mmap threshold after large frees, so the per-batch buffers of a bulk load
    (megabytes each) move into the heap, whose freed space is rarely given back; pinning the
    threshold at 128 KiB (glibc's default start) avoids that. Measured on a 200k x 384 HNSW
    ingest: peak RSS 1,017 -> 886 MiB. Only this command's process is affected; a no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD


def _index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .ingest import IngestInterrupted, MalformedInputError, Report, ingest

    _pin_mmap_threshold()
    bar: Any = None

    def progress(r: Report) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            bar = tqdm(
                total=r.total_rows,
                initial=r.resumed_from,
                unit="doc",
                desc=f"indexing {args.collection}",
                dynamic_ncols=True,
            )
        bar.update(r.resumed_from + r.rows - bar.n)
        bar.set_postfix(written=f"{r.added:,}", skipped=f"{r.skipped:,}", refresh=False)

    if (args.encoders != 1 or args.gpus_per_encoder is not None) and args.ray is None:
        print("vecdex: error: --encoders and --gpus-per-encoder need --ray", file=sys.stderr)
        return 2
    # With --ray the shards are Ray actors too (HNSW shards build in parallel processes).
    with Engine(args.data, ray=args.ray if args.shards else None) as eng:
        try:
            report = ingest(
                eng,
                args.input,
                args.collection,
                format=args.format,
                encoder=args.encoder,
                vector_column=args.vector_column,
                index=args.index,
                metric=args.metric,
                id_column=args.id_column,
                text_columns=args.text_column,
                payload_columns=args.payload_columns,
                store_text=not args.no_store_text,
                batch_size=args.batch_size,
                on_error=args.on_error,
                upsert=args.upsert,
                overwrite=args.overwrite,
                progress=progress,
                lexical=not args.no_lexical,
                shards=args.shards,
                ray=args.ray,
                encoders=args.encoders,
                gpus_per_encoder=args.gpus_per_encoder,
            )
        except MalformedInputError as e:
            for b in e.bad:
                print(f"vecdex: malformed: {b}", file=sys.stderr)
            if e.total > len(e.bad):
                print(f"vecdex: ... {e.total - len(e.bad)} more", file=sys.stderr)
            print(
                f"vecdex: error: {e.total} malformed rows; nothing was written. Fix the input, "
                "or pass --on-error skip to index the other rows",
                file=sys.stderr,
            )
            return 2
        except IngestInterrupted as e:
            if bar is not None:
                bar.close()
            print(f"vecdex: {e}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:  # before the first write (checking the input): nothing written
            print("vecdex: interrupted before anything was written", file=sys.stderr)
            return 130
        finally:
            if bar is not None:
                bar.close()
    if not args.quiet:
        for b in report.errors:
            print(f"skipped {b}", file=sys.stderr)
        if report.skipped > len(report.errors):
            print(f"skipped ... {report.skipped - len(report.errors)} more", file=sys.stderr)
        print(report.summary())
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report.as_dict(), f, indent=2)
    return 0


def _search(args: argparse.Namespace) -> int:
    eng = Engine(args.data, read_only=True)
    col = eng.open_collection(args.collection)
    where = None
    if args.where:
        try:
            where = json.loads(args.where)
        except ValueError as e:
            raise ValueError(f"--where is not JSON: {e}") from None
    query: Any = args.query
    if args.vector:
        try:
            query = json.loads(args.query)
        except ValueError as e:
            raise ValueError(f"--vector: the query is not a JSON list of numbers: {e}") from None
    elif col.encoder_spec is None and args.mode != "lexical":
        raise ValueError(
            f"collection {args.collection!r} has no encoder: pass the query as a JSON vector "
            "with --vector (or search it with --mode lexical)"
        )
    if args.text is not None and not args.vector:
        raise ValueError("--text is the lexical query beside a --vector query; give one text")
    params: dict[str, Any] = {}
    for p in args.param or []:
        key, sep, value = p.partition("=")
        if not sep:
            raise ValueError(f"--param takes NAME=VALUE, got {p!r}")
        params[key] = float(value) if "." in value else int(value)
    t0 = time.perf_counter()
    hits = col.search(
        query,
        k=args.k,
        where=where,
        mode=args.mode,
        text=args.text,
        fusion=args.fusion,
        weight=args.weight,
        rrf_k=args.rrf_k,
        depth=args.depth,
        **params,
    )
    ms = (time.perf_counter() - t0) * 1000
    if args.json:
        print(json.dumps([{"id": h.id, "score": h.score, "payload": h.payload} for h in hits]))
        return 0
    for rank, h in enumerate(hits, start=1):
        shown = ", ".join(f"{k}={str(v)[:80]!s}" for k, v in h.payload.items())
        print(f"{rank:>3}. {h.score:.4f}  {h.id}  {shown}")
    print(f"{len(hits)} hits in {ms:.1f} ms (encoder and search)", file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_beir, format_table
    from .fusion import Fusion

    fusion = Fusion.make(args.fusion, args.weight, args.rrf_k, args.depth)
    rows = evaluate_beir(
        args.beir_dir,
        split=args.split,
        encoders_=args.encoder,
        indexes=args.index,
        k=args.k,
        modes=args.mode,
        fusion=fusion,
        fit_fusion=args.fit_fusion,
    )
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import encoders
    from encoders.train import TrainConfig, save_trained, train

    from . import training

    examples, corpus = training.gather_examples(
        beir_dir=args.beir,
        split=args.split,
        pairs=args.pairs,
        unsupervised=args.unsupervised,
        teacher_file=args.distill if args.distill != "hybrid" else None,
        seed=args.seed,
    )
    if args.distill == "hybrid":
        if not corpus:
            raise ValueError("--distill hybrid needs a corpus: give --beir DIR")
        print(f"hybrid teacher (BM25 + {args.distill_dense}) over {len(examples)} examples")
        examples = training.hybrid_teacher(
            corpus,
            examples,
            candidates=args.distill_candidates,
            depth=args.mine_depth,
            dense=encoders.load(args.distill_dense),
        )
    # A fresh copy, never the process-wide cache's: training changes the weights in place, and
    # collections that share the spec must keep encoding with the saved model.
    encoder = encoders.load(args.encoder)
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
        distill_weight=args.distill_weight,
        teacher_temperature=args.distill_temperature,
        encode_doc_len=args.encode_doc_len,
    )
    print(f"training {encoder} on {len(examples)} examples")
    bar = tqdm(total=None, disable=args.quiet, desc="train", unit="step")

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.set_postfix(loss=f"{loss:.4f}")
        bar.update(1)

    losses = train(encoder, examples, config, miner=miner, progress=progress)
    bar.close()
    save_trained(encoder, args.out, config)
    first, last = (
        sum(losses[:5]) / max(1, len(losses[:5])),
        sum(losses[-5:]) / max(1, len(losses[-5:])),
    )
    print(f"saved {args.out} (loss {first:.4f} -> {last:.4f}); use it as encoder={args.out!r}")
    kl = config.distill_losses
    if kl:
        head, tail = kl[: max(1, len(kl) // 10)], kl[-max(1, len(kl) // 10) :]
        print(f"distillation KL {sum(head) / len(head):.4f} -> {sum(tail) / len(tail):.4f}")
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
        inline_max_ms=args.inline_max_ms,
        grace_s=args.grace,
        limits=Limits(max_message_bytes=args.max_message_mb << 20, max_k=args.max_k),
    )

    def ready(port: int) -> None:
        scheme = "tls" if config.tls_cert else "plaintext"
        auth = "token required" if token else "no token"
        print(f"vecdex: serving {args.data} on {args.host}:{port} ({scheme}, {auth})", flush=True)

    run(config, on_ready=ready, ray=args.ray)
    return 0


def _fusion_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hybrid fusion (default: the collection's; see README)")
    g.add_argument("--fusion", help="dbsf, weighted or rrf")
    g.add_argument("--weight", type=float, help="the dense side's weight in [0, 1]")
    g.add_argument("--rrf-k", type=float, help="rrf: the rank offset (default 60)")
    g.add_argument("--depth", type=int, help="results each side contributes (default 100)")


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
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_info)

    v = sub.add_parser(
        "verify",
        help="hash every file of the collections against their manifests",
        description="Checks every file's SHA-256 (what a full open checks; see Engine(verify=)). "
        "Exit status 1 when a file is corrupted; the message names it.",
    )
    v.add_argument("--data", required=True)
    v.add_argument("--collection")
    v.set_defaults(func=_verify)

    x = sub.add_parser(
        "index",
        help="index a Parquet / JSONL / CSV file or a BEIR directory (streamed, resumable)",
        description="Streams INPUT into a collection (created when absent). Killed or "
        "interrupted, the same command continues from the last committed batch.",
    )
    x.add_argument("input", help="a file, a directory of same-format files, or a BEIR directory")
    x.add_argument("--data", required=True, help="the data directory")
    x.add_argument("--collection", required=True)
    x.add_argument("--format", choices=["parquet", "jsonl", "csv", "beir"], help="else by name")
    what = x.add_mutually_exclusive_group()
    what.add_argument("--encoder", help="encode texts with it (default: 'default', MiniLM)")
    what.add_argument("--vector-column", help="precomputed vectors (list column)")
    x.add_argument("--index", help="index spec for a new collection (default hnsw / muvera)")
    x.add_argument("--metric", choices=["cosine", "ip", "l2"], help="for a new collection")
    x.add_argument("--id-column", help="default: id, _id, doc_id or docid")
    x.add_argument("--text-column", nargs="+", help="joined with a space (default title text)")
    x.add_argument("--payload-columns", nargs="+", help="stored with each item")
    x.add_argument("--no-store-text", action="store_true", help="do not keep the texts")
    x.add_argument("--batch-size", type=int, help="rows per batch (256 texts, 8192 vectors)")
    x.add_argument("--on-error", choices=["fail", "skip"], default="fail", help="malformed rows")
    x.add_argument("--upsert", action="store_true", help="existing ids are replaced")
    x.add_argument("--overwrite", action="store_true", help="drop the collection first")
    x.add_argument("--report", help="write the final report as JSON here")
    scale = x.add_argument_group("scale-out (README: Beyond one machine)")
    scale.add_argument("--shards", type=int, help="a new collection: this many shards by id hash")
    scale.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="read and encode on Ray (no address: a local cluster on 127.0.0.1)",
    )
    scale.add_argument("--encoders", type=int, default=1, help="--ray: encoder actors")
    scale.add_argument(
        "--gpus-per-encoder",
        type=float,
        help="--ray: GPUs per encoder actor (default: 1 when the cluster has one per encoder)",
    )
    x.add_argument("--quiet", action="store_true", help="no progress bar or report")
    x.add_argument(
        "--no-lexical", action="store_true", help="no BM25 index of the texts (no hybrid search)"
    )
    x.set_defaults(func=_index)

    q = sub.add_parser("search", help="query a collection")
    q.add_argument("query", help="query text (or a JSON vector with --vector)")
    q.add_argument("--data", required=True)
    q.add_argument("--collection", required=True)
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--where", help='payload filter as JSON, e.g. \'{"year": {"$gte": 2020}}\'')
    q.add_argument("--vector", action="store_true", help="the query is a JSON list of numbers")
    q.add_argument("--param", nargs="+", help="index search parameters, e.g. ef=256")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument(
        "--mode", default="dense", help="dense (default), lexical (BM25) or hybrid (fused)"
    )
    q.add_argument("--text", help="with --vector: the lexical side's query text")
    _fusion_arguments(q)
    q.set_defaults(func=_search)
    e = sub.add_parser("eval", help="nDCG@10 / recall@100 / MRR@10 on a BEIR directory")
    e.add_argument("beir_dir")
    e.add_argument("--split", default="test")
    e.add_argument("--encoder", nargs="+", default=["default"], help="encoder spec(s)")
    e.add_argument("--index", nargs="+", default=["flat"], help="index spec(s)")
    e.add_argument("-k", type=int, default=100, help="depth retrieved per query")
    e.add_argument(
        "--mode", nargs="+", default=["dense"], help="dense, lexical and/or hybrid: a row each"
    )
    _fusion_arguments(e)
    e.add_argument(
        "--fit-fusion",
        metavar="SPLIT",
        help="choose the fusion on this split's judged queries (e.g. train); adds a row",
    )
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
    hp.add_argument(
        "--encode-doc-len",
        type=int,
        default=0,
        help="token encoder: the saved model cuts documents at this many tokens (training keeps "
        "the encoder's doc_max_len, 256 by default; 512 scored better on SciFact)",
    )
    mine = t.add_argument_group("hard negatives")
    mine.add_argument("--hard-negatives", action="store_true", help="mine with vecdex's index")
    mine.add_argument("--refresh-negatives", action="store_true", help="re-mine every epoch")
    mine.add_argument("--mine-depth", type=int, default=30)
    mine.add_argument("--mine-margin", type=float, default=0.95)
    dist = t.add_argument_group("distillation (--encoder token)")
    dist.add_argument(
        "--distill",
        metavar="FILE|hybrid",
        help="teacher scores: a JSONL file (query, documents, scores) or 'hybrid' (BM25 fused "
        "with --distill-dense over mined candidates)",
    )
    dist.add_argument(
        "--distill-weight", type=float, default=1.0, help="KL weight; 1-w goes to InfoNCE"
    )
    dist.add_argument(
        "--distill-temperature", type=float, default=1.0, help="teacher scores are divided by it"
    )
    dist.add_argument("--distill-candidates", type=int, default=8, help="hybrid: per query")
    dist.add_argument("--distill-dense", default="default", help="hybrid: single-vector encoder")
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
    s.add_argument("--inline-max-ms", type=float, default=0.0, help="inline HNSW below")
    s.add_argument("--grace", type=float, default=10.0, help="shutdown drain, seconds")
    s.add_argument("--max-message-mb", type=int, default=64, help="largest message")
    s.add_argument("--max-k", type=int, default=1000, help="largest k")
    s.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="host sharded collections' shards as Ray actors (no address: a local cluster)",
    )
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
