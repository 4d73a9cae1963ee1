"""``vecdex index --ray``: reading, checking and encoding on a Ray cluster (Ray Data).

The input is cut into the same chunks as a local run (``batch_size`` rows from row 0), and Ray
Data runs two stages over them:

1. read tasks, each reading a contiguous range of chunks with vecdex's own readers
   (``engine.sources``) and checking their rows (``check_chunk``). Ray Data's readers would lose
   what a run needs: each row's number in the input (malformed rows are reported by row and
   line), the chunk boundaries a resumed run restarts at, and JSONL lines that are not JSON as
   malformed rows rather than a failed read;
2. ``map_batches`` over an actor pool of the collection's encoder (``--encoders C`` actors,
   ``--gpus-per-encoder G`` GPUs each), one chunk per call.

Ray Data runs with ``preserve_order``, so the driver receives the chunks in input order (by
default Ray Data yields blocks as they finish). The driver then does what needs the whole
run's state, exactly as a local run: ids already written (by an earlier chunk or run), the
write to the shards with the run's marker, the report. Encoding, the expensive stage, is what
scales out; the driver handles vectors once, on their way to the shards.

A chunk travels between stages as bytes in vecdex's own layout (a JSON header and raw float32
arrays): no pickle of row data.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..sources import Source
from .pipeline import Pipeline
from .plan import Plan
from .report import BadRow
from .rows import Batch, check_chunk

log = logging.getLogger(__name__)

READ_TASKS = 16  # ranges of chunks read in parallel (at most)
_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "SENTENCE_TRANSFORMERS_HOME")


# ---- a chunk as bytes -------------------------------------------------------------------------
def pack(batch: Batch, where: list[str]) -> bytes:
    """A checked (and maybe encoded) chunk as bytes: a JSON header, then its float32 vectors.
    ``where`` names each row to write as a message would (``Chunk.where``: row and line)."""
    lengths: list[int] | None = None
    vectors = b""
    shape: list[int] | None = None
    if isinstance(batch.vectors, np.ndarray):
        x = np.ascontiguousarray(batch.vectors, dtype=np.float32)
        shape, vectors = list(x.shape), x.tobytes()
    elif batch.vectors is not None:
        parts = [np.ascontiguousarray(v, dtype=np.float32) for v in batch.vectors]
        lengths = [int(v.shape[0]) for v in parts]
        dim = int(parts[0].shape[1]) if parts else 0
        shape = [sum(lengths), dim]
        vectors = b"".join(v.tobytes() for v in parts)
    head = {
        "start": batch.start,
        "end": batch.end,
        "rows": batch.rows,
        "ids": batch.ids,
        "texts": batch.texts,
        "payloads": batch.payloads,
        "bad": [[b.where, b.id, b.reason] for b in batch.bad],
        "where": where,
        "shape": shape,
        "lengths": lengths,
    }
    header = json.dumps(head, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return len(header).to_bytes(8, "little") + header + vectors


def unpack(blob: bytes) -> tuple[Batch, list[str]]:
    n = int.from_bytes(blob[:8], "little")
    head = json.loads(blob[8 : 8 + n].decode("utf-8"))
    vectors: Any = None
    if head["shape"] is not None:
        x = np.frombuffer(blob, dtype=np.float32, offset=8 + n).reshape(head["shape"])
        if head["lengths"] is None:
            vectors = x
        else:
            cuts = np.cumsum([0, *head["lengths"]])
            vectors = [x[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    batch = Batch(
        start=head["start"],
        end=head["end"],
        rows=head["rows"],
        ids=head["ids"],
        texts=head["texts"],
        vectors=vectors,
        payloads=head["payloads"],
        bad=[BadRow(w, i, r) for w, i, r in head["bad"]],
    )
    return batch, head["where"]


# ---- the Ray Data stages --------------------------------------------------------------------
def _read_chunks(
    desc: dict[str, np.ndarray],
    *,
    path: str,
    format: str,
    plan: Plan,
    batch_size: int,
    dim: int | None,
    multi: bool,
) -> Iterator[dict[str, Any]]:
    """Read task: a range of chunks, checked (ids already written are the driver's check)."""
    first, last = int(desc["first"][0]), int(desc["last"][0])
    chunks = Source(path, format).chunks(
        plan.columns(), batch_size, skip=first * batch_size, strings=plan.strings()
    )
    for n, chunk in enumerate(chunks):
        if last >= 0 and first + n >= last:
            return
        batch = check_chunk(chunk, plan, dim, None, multi)
        where = [chunk.where(row) for row in batch.rows]
        yield {"chunk": np.array([first + n]), "blob": np.array([pack(batch, where)], dtype=object)}


class _Encode:
    """Encoder actor: loads the encoder once, then encodes one chunk's texts per call."""

    def __init__(self, spec: str, threads: int) -> None:
        import torch

        import encoders

        if threads > 0:
            torch.set_num_threads(threads)
        self.encoder = encoders.load(spec)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, Any]:
        out = []
        for blob in rows["blob"]:
            batch, where = unpack(blob)
            if batch.texts is not None and batch.ids:
                batch.vectors = self.encoder.encode_documents(batch.texts)
            out.append(pack(batch, where))
        return {"chunk": rows["chunk"], "blob": np.array(out, dtype=object)}


def encoded_chunks(
    source: Source,
    plan: Plan,
    batch_size: int,
    start: int,
    total_rows: int | None,
    dim: int | None,
    multi: bool,
    encoder: str | None,
    *,
    encoders: int,
    gpus_per_encoder: float | None,
    cpus_per_encoder: int | None,
) -> Iterator[tuple[Batch, list[str]]]:
    """The input's chunks from row ``start`` on, checked and encoded on the cluster, in order,
    each with the names of its rows to write (``pack``)."""
    import ray

    cluster_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    first = start // batch_size
    n_chunks = None if total_rows is None else max(0, math.ceil(total_rows / batch_size) - first)
    ranges: list[tuple[int, int]]
    if not n_chunks:
        ranges = [(first, -1)]
    else:
        per = max(1, math.ceil(n_chunks / READ_TASKS))
        ranges = [(a, a + per) for a in range(first, first + n_chunks, per)]
        ranges[-1] = (ranges[-1][0], -1)  # the last range reads to the end (CSV counts estimate)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the run's own progress bar reports
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ds: Any = ray.data.from_items(
        [{"first": a, "last": b} for a, b in ranges], override_num_blocks=len(ranges)
    )
    ds = ds.map_batches(
        _read_chunks,  # type: ignore[arg-type]
        fn_kwargs={
            "path": str(source.path),
            "format": source.format,
            "plan": plan,
            "batch_size": batch_size,
            "dim": dim,
            "multi": multi,
        },
        batch_size=1,
        batch_format="numpy",
        # With encoders, reading is the light stage and takes no CPU of its own: encoder
        # actors holding every CPU would otherwise leave read tasks unscheduled for good.
        num_cpus=0 if encoder is not None else 1,
        compute=ray.data.TaskPoolStrategy(size=max(1, min(len(ranges), cluster_cpus))),
    )
    if encoder is not None:
        cpus = cpus_per_encoder or max(1, cluster_cpus // encoders)
        if gpus_per_encoder is None:  # GPU actors when the cluster has a GPU for each
            gpus_per_encoder = 1.0 if ray.cluster_resources().get("GPU", 0) >= encoders else 0.0
        log.info(
            "%d encoder actor(s), %d CPU(s) and %g GPU(s) each", encoders, cpus, gpus_per_encoder
        )
        ds = ds.map_batches(
            _Encode,
            fn_constructor_args=(encoder, cpus),
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=encoders),
            num_cpus=cpus,
            num_gpus=gpus_per_encoder,
            runtime_env=runtime_env() or None,
        )
    for row in ds.iter_rows():
        yield unpack(row["blob"])


def connect(address: str) -> None:
    """Connects to (or starts) the Ray cluster, handing workers the offline-model settings."""
    from .. import raycluster

    raycluster.connect(address)


def runtime_env() -> dict[str, Any]:
    """What workers need from the driver's environment: offline model resolution."""
    env = {k: os.environ[k] for k in _ENV if k in os.environ}
    return {"env_vars": env} if env else {}


class RayPipeline(Pipeline):
    """A run whose reading, checking and encoding run on Ray (``encoded_chunks``); the driver's
    reader thread checks ids against what is written, and the writer commits, as locally."""

    def __init__(self, *args: Any, ray_options: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ray_options = ray_options

    def _checked_batches(self) -> Iterator[Batch]:
        """Chunks read, checked and encoded on the cluster (``encoded_chunks``), less the
        ids already written."""
        col = self.col
        encoder = col.encoder_spec if self.plan.vector_column is None else None
        chunks = encoded_chunks(
            self.source,
            self.plan,
            self.batch_size,
            self.report.resumed_from,
            self.report.total_rows,
            col.dim,
            col.multi_vector,
            encoder,
            **self.ray_options,
        )
        for batch, where in chunks:
            yield self._drop_written(batch, where)

    def _drop_written(self, batch: Batch, where: list[str]) -> Batch:
        """The batch less ids an earlier chunk or run wrote (unless the run upserts)."""
        if self.plan.upsert or not batch.ids:
            return batch
        written = self._exist_many(batch.ids, batch.end)
        keep = [j for j, there in enumerate(written) if not there]
        if len(keep) == len(batch.ids):
            return batch
        dropped = sorted(set(range(len(batch.ids))) - set(keep))
        why = "duplicate id: already in the collection (an earlier row or run)"
        bad = [BadRow(where[j], batch.ids[j], why) for j in dropped]
        x = batch.vectors
        return Batch(
            start=batch.start,
            end=batch.end,
            rows=[batch.rows[j] for j in keep],
            ids=[batch.ids[j] for j in keep],
            texts=None if batch.texts is None else [batch.texts[j] for j in keep],
            vectors=(
                None
                if x is None
                else x[keep]
                if isinstance(x, np.ndarray)
                else [x[j] for j in keep]
            ),
            payloads=[batch.payloads[j] for j in keep],
            bad=[*batch.bad, *bad],
        )

    def _encode(self, batch: Batch) -> Batch:
        """Encoded on the cluster already: only the lexical index's texts are set here."""
        if self.col.lexical and self.col.text_field is None and batch.ids:
            batch.lexical_texts = batch.texts
        batch.texts = None
        return batch
