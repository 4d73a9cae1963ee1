"""``ingest()``: one run, from the options to a planned, checked and written collection."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..sources import Source
from .pipeline import Pipeline
from .plan import check_fits, first_dim, is_multi_index, make_plan, previous_run
from .report import Report
from .rows import check_all

log = logging.getLogger(__name__)

ON_ERROR = ("fail", "skip")
TEXT_BATCH = 256
VECTOR_BATCH = 8192


def ingest(
    eng: Engine,
    input: str | Path,
    collection: str,
    *,
    format: str | None = None,
    encoder: str | None = None,
    vector_column: str | None = None,
    index: str | None = None,
    metric: str | None = None,
    id_column: str | None = None,
    text_columns: list[str] | tuple[str, ...] | None = None,
    payload_columns: list[str] | tuple[str, ...] | None = None,
    store_text: bool = True,
    batch_size: int | None = None,
    on_error: str = "fail",
    upsert: bool = False,
    overwrite: bool = False,
    progress: Callable[[Report], None] | None = None,
    lexical: bool = True,
    shards: int | None = None,
    ray: str | None = None,
    encoders: int = 1,
    gpus_per_encoder: float | None = None,
    cpus_per_encoder: int | None = None,
) -> Report:
    """Indexes a Parquet / JSONL / CSV file (or a directory of them, or a BEIR directory) into
    collection ``collection`` of ``eng``, creating it when absent; resumes an interrupted run.

    Args:
        input: the file or directory; ``format`` overrides detection by extension.
        encoder: texts are encoded with it (a new collection; an existing one uses its own).
        vector_column: precomputed vectors instead (a list or fixed-size-list column; in CSV a
            string such as ``"[0.1, 0.2]"``). With neither, a column named vector / embedding
            is used if present, else texts with the ``default`` encoder.
        index, metric: for a new collection (default: the engine's defaults).
        id_column: default the first of id, _id, doc_id, docid present.
        text_columns: joined with a space (default: title and text, or text).
        payload_columns: stored as each item's payload; with ``store_text`` the text columns too.
        batch_size: rows per chunk (one write each; default 256 for texts, 8192 for vectors).
            A resumed run keeps the batch size it started with.
        on_error: ``"fail"`` (check everything first; write nothing if a row is malformed) or
            ``"skip"`` (write the good rows, report the malformed ones).
        upsert: ids already in the collection (or repeated in the input) replace the earlier
            item instead of being malformed rows.
        overwrite: drop the collection first.
        progress: called after each committed chunk with the running report.
        lexical: a new collection from texts keeps a BM25 index of them (lexical and hybrid
            search); False skips it. An existing collection keeps its own setting.
        shards: a new collection is sharded this many ways by id hash (``ShardedCollection``);
            an existing sharded collection must have as many.
        ray: read, check and encode on a Ray cluster (Ray Data; ``"local"`` starts one on this
            machine, else a Ray address): ``engine.ingest.distributed``. The shards are hosted
            where ``eng`` hosts them (``Engine(ray=...)``).
        encoders, gpus_per_encoder, cpus_per_encoder: with ``ray``, the encoder actors: how
            many, and the GPUs (may be fractional; default: one each when the cluster has a
            GPU for every encoder, else none) and CPUs (default: the cluster's CPUs shared
            among them) each one takes.

    Raises:
        InputError: unreadable input or absent columns. MalformedInputError: malformed rows
        under ``on_error="fail"``. IngestInterrupted: Ctrl-C (the run can be resumed).
        ValueError: arguments that do not fit each other or the collection.
    """
    _check_arguments(on_error, encoder, vector_column, batch_size)
    _check_ray(ray, encoders, gpus_per_encoder, cpus_per_encoder)
    source = Source(input, format)
    t0 = time.perf_counter()
    if overwrite and collection in eng.list_collections():
        eng.drop_collection(collection)
    col = eng.open_collection(collection) if collection in eng.list_collections() else None
    if shards is not None and col is not None and getattr(col, "shards", 1) != shards:
        raise ValueError(
            f"collection {collection!r} has {getattr(col, 'shards', 1)} shard(s), not {shards}: "
            "index into it without --shards, or pass --overwrite to rebuild it"
        )
    plan, encoder_spec = make_plan(
        source,
        col,
        encoder=encoder,
        vector_column=vector_column,
        id_column=id_column,
        text_columns=text_columns,
        payload_columns=payload_columns,
        store_text=store_text,
        upsert=upsert,
    )
    report = Report(collection, str(input), source.format)
    run = {"input": source.fingerprint(), "plan": plan.as_json()}
    state = previous_run(col, run)
    if state is not None and state.get("done"):
        report.already_done = True
        report.count = len(col) if col is not None else 0
        report.bytes_on_disk = col.describe()["bytes_on_disk"] if col is not None else 0
        return report
    if state is not None:
        batch_size = int(state["batch_size"])
        report.resumed_from = int(state["rows"])
        log.info("resuming %s into %r at row %d", input, collection, report.resumed_from)
    elif batch_size is None:
        batch_size = VECTOR_BATCH if plan.vector_column else TEXT_BATCH
    assert batch_size is not None
    report.total_rows = source.count_rows()

    if col is None:
        dim = None if plan.vector_column is None else first_dim(source, plan, batch_size)
        if on_error == "fail":
            check_all(source, plan, batch_size, dim, None, multi=is_multi_index(index))
        col = eng.create_collection(
            collection,
            dim=dim,
            encoder=encoder_spec if plan.vector_column is None else None,
            index=index,
            metric=metric or "cosine",
            lexical=lexical and plan.vector_column is None,
            shards=shards,
        )
    else:
        check_fits(col, plan, encoder=encoder, index=index, metric=metric)
        if on_error == "fail" and state is None:
            check_all(source, plan, batch_size, col.dim, col, multi=col.multi_vector)
    args = (col, source, plan, run, state, batch_size, on_error, report, progress, t0)
    if ray is None:
        Pipeline(*args).run()
        return report
    from . import distributed  # imports ray: only for --ray runs

    distributed.connect(ray)
    options = {
        "encoders": encoders,
        "gpus_per_encoder": gpus_per_encoder,
        "cpus_per_encoder": cpus_per_encoder,
    }
    distributed.RayPipeline(*args, ray_options=options).run()
    return report


def _check_ray(ray: str | None, encoders: Any, gpus: Any, cpus: Any) -> None:
    if ray is not None and (not isinstance(ray, str) or not ray.strip()):
        raise ValueError(f"ray must be 'local' or a Ray address, got {ray!r}")
    if isinstance(encoders, bool) or not isinstance(encoders, int) or encoders < 1:
        raise ValueError(f"encoders must be a positive integer, got {encoders!r}")
    if gpus is not None and (
        isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not gpus >= 0
    ):
        raise ValueError(f"gpus_per_encoder must be a number >= 0, got {gpus!r}")
    if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1):
        raise ValueError(f"cpus_per_encoder must be a positive integer, got {cpus!r}")


def _check_arguments(
    on_error: str, encoder: str | None, vector_column: str | None, batch_size: int | None
) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if encoder is not None and vector_column is not None:
        raise ValueError("give an encoder or a vector column, not both")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
