"""``ShardedCollection``: N ordinary collections behind the API of one (``CollectionLike``).

Writes are routed by id hash (``engine.shards.shard_of``) and each shard's part is written
concurrently; searches fan out to every shard and the per-shard top-k are merged into the exact
top-k (``engine.shards.merge``). Shards are hosted in this process (``LocalShards``) or by Ray
actors, one per shard (``engine.rayshards``): the same calls either way.

What is not the same as one collection:
- A write is atomic per shard, not across shards. A write that fails on one shard (a shard
  down: ``ShardUnavailableError``) has committed the parts the other shards took; ``upsert``
  the same items again to complete it.
- A lexical (BM25) ranking scores each shard with its own corpus statistics (IDF, mean length),
  as Elasticsearch and OpenSearch do by default; with ids spread by hash the statistics of
  shards of a few thousand documents and more agree closely, but scores are not bit-equal to
  one collection's. Hybrid search fuses the merged dense and merged lexical rankings here,
  once, exactly as one collection fuses its own.
- Equal scores from different shards rank the lower shard first (one collection: the earlier
  insertion).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import encoders
import index as ix
from index.validate import check_k

from . import encoding, shards
from .errors import ShardUnavailableError
from .fusion import Fusion, check_mode, fusion_for
from .itemstore import TokenSetStore, VectorStore
from .payloads import check_payloads
from .results import Hits, Record, SearchResult
from .writing import check_ids, check_marker

log = logging.getLogger(__name__)


class ShardedCollection:
    """A collection split into shards by id hash (see the module docstring).

    Opened by ``Engine.open_collection`` on a collection created with ``shards=N`` (or built by
    ``vecdex index --shards N``); not constructed directly.
    """

    def __init__(self, path: Path, name: str, manifest: dict[str, Any], hosts: Any) -> None:
        self.path = path
        self.name = name
        self._config = dict(manifest["config"])
        self._shards = hosts
        self.n_shards = int(manifest["shards"])
        self.dim = int(self._config["dim"])
        self.metric = ix.Metric.parse(self._config["metric"])
        self.encoder_spec: str | None = self._config.get("encoder")
        self.text_field: str | None = self._config.get("text_field")
        self.multi_vector = ix.spec.is_multivector(ix.parse_spec(self._config["index"])[0])
        # Each shard stores the default fusion (set_fusion sets it on all): shard 0's is it.
        self._fusion = (
            Fusion.from_dict(self._shards.call(0, "fusion").result()) if self.lexical else Fusion()
        )
        self._encoder: encoders.Encoder | None = None
        self._store = TokenSetStore(self.dim) if self.multi_vector else VectorStore(self.dim)
        self._write_lock = threading.Lock()
        self._shared_quantizer = ix.shares_quantizer(self.index_spec)
        if self._shared_quantizer:
            trained, _ = self._shards.gather("quantizer")
            self._shared_quantizer = any(q is None for q in trained)
        positions, _ = self._shards.gather("position")
        self._positions = [int(p) for p in positions]
        self._durability = "fsync"
        self._checkpoint_bytes: int | None = None
        self.closed = False

    # ---- what it is -----------------------------------------------------------------------------
    @property
    def index_spec(self) -> str:
        return str(self._config["index"])

    @property
    def lexical(self) -> bool:
        return "lexical" in self._config

    @property
    def fusion(self) -> Fusion:
        return self._fusion

    @property
    def shards(self) -> int:
        """How many shards."""
        return self.n_shards

    @property
    def hosted(self) -> str:
        """Where the shards run: ``in-process`` or ``ray``."""
        return str(self._shards.where)

    @property
    def encoder(self) -> encoders.Encoder | None:
        if self._encoder is None and self.encoder_spec is not None:
            self._encoder = encoding.resolve(self.encoder_spec)
        return self._encoder

    def config(self) -> dict[str, Any]:
        config = dict(self._config)
        config.pop("fusion", None)
        if self._fusion != Fusion():
            config["fusion"] = self._fusion.to_dict()
        return config

    def __repr__(self) -> str:
        return (
            f"ShardedCollection({self.name!r}, shards={self.n_shards}, index={self.index_spec!r}, "
            f"{self.hosted})"
        )

    def __len__(self) -> int:
        counts, _ = self._shards.gather("count")
        return int(sum(counts))

    def __contains__(self, id: object) -> bool:
        if not isinstance(id, (str, int)) or isinstance(id, bool):
            return False
        key = str(id)
        i = int(shards.shard_of([key], self.n_shards)[0])
        return bool(self._shards.call(i, "contains", [key]).result()[0])

    def ids(self) -> list[str]:
        """Every id, shard by shard (each shard in insertion order)."""
        parts, _ = self._shards.gather("ids")
        return [k for part in parts for k in part]

    def describe(self) -> dict[str, Any]:
        """One collection's description (count and bytes summed over the shards), plus
        ``shards``, ``hosted`` and ``per_shard`` (each shard's count and bytes on disk)."""
        parts, _ = self._shards.gather("describe")
        out: dict[str, Any] = {
            "name": self.name,
            **self.config(),
            "multi_vector": self.multi_vector,
            "count": sum(p["count"] for p in parts),
        }
        if self.lexical:
            out["lexical_count"] = sum(p.get("lexical_count", 0) for p in parts)
            out["fusion"] = self._fusion.to_dict()
        out["bytes_on_disk"] = sum(p["bytes_on_disk"] for p in parts)
        memory: dict[str, dict[str, int]] = {}
        for p in parts:
            for part, use in p.get("memory", {}).items():
                into = memory.setdefault(part, {"ram": 0, "disk": 0})
                into["ram"] += int(use.get("ram", 0))
                into["disk"] += int(use.get("disk", 0))
        out["memory"] = memory
        if parts and "pruning" in parts[0]:  # token pruning: counts summed over the shards
            keys = ("tokens_stored", "tokens_in", "tokens_kept")
            pr = [p["pruning"] for p in parts]
            out["pruning"] = {"ratio": pr[0]["ratio"], **{k: sum(x[k] for x in pr) for k in keys}}
        out["shards"] = self.n_shards
        out["hosted"] = self.hosted
        out["per_shard"] = [
            {
                "shard": shards.shard_name(i),
                "count": p["count"],
                "bytes_on_disk": p["bytes_on_disk"],
            }
            for i, p in enumerate(parts)
        ]
        return out

    # ---- the shared quantizer (ivf, pq) -------------------------------------------------------
    @property
    def needs_quantizer(self) -> bool:
        """An ``ivf`` / ``pq`` collection whose shards have no quantizer yet: one write of at
        least ``train_size`` vectors (or ``train_quantizer``) trains one for all of them."""
        return self._shared_quantizer

    @functools.cached_property
    def train_size(self) -> int:
        """Vectors a shared quantizer trains on (the index's own training size)."""
        idx: Any = ix.from_spec(self.index_spec, self.dim, self.metric)
        return int(getattr(idx, "train_size", 0))

    def train_quantizer(self, sample: Any) -> None:
        """Trains the coarse quantizer (and PQ codebooks) of an empty ``ivf`` / ``pq``
        collection once, on ``sample`` ((n, dim) vectors), and installs it in every shard, so
        that all shards index into the same lists (as one index over all the data would). A
        write of at least ``train_size`` vectors to the empty collection does this itself;
        without it each shard trains on its own first ``train_size`` vectors.

        Raises:
            ValueError: the index has no quantizer, the collection is not empty, or the
                sample is too small or malformed.
        """
        if not ix.shares_quantizer(self.index_spec):
            raise ValueError(f"index {self.index_spec!r} has no quantizer to train")
        with self._write_lock:
            self._train_quantizer(np.asarray(sample, dtype=np.float32))

    def _train_quantizer(self, x: np.ndarray) -> None:
        if len(self):
            raise ValueError(
                f"collection {self.name!r} is not empty: a shared quantizer is trained before "
                "the first vectors go in"
            )
        arrays = ix.train_quantizer(self.index_spec, self.dim, self.metric, x)
        self._shards.gather("adopt_quantizer", (arrays,))
        self._shared_quantizer = False

    # ---- writes ---------------------------------------------------------------------------------
    def add(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
        marker: dict[str, Any] | None = None,
        position: int | None = None,
    ) -> None:
        """Adds new items; fails (writing nothing) if any id already exists. See ``upsert``."""
        self._write(False, ids, vectors, payloads, texts, marker, position)

    def upsert(
        self,
        ids: Any,
        vectors: Any = None,
        payloads: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
        marker: dict[str, Any] | None = None,
        position: int | None = None,
    ) -> None:
        """Adds items, replacing the ones whose ids exist (``Collection.upsert``).

        ``marker`` is committed on every shard with its part of the write (an empty part
        commits the marker alone), at ``position``: an integer larger than any earlier
        marker'd write's (default: one more than the most advanced shard's). A shard that
        holds a position at or past it skips the write (it has it already). ``marker`` reads
        back the least advanced shard's marker.

        Raises:
            ValueError: what ``Collection.upsert`` refuses, before any shard is written.
            ShardUnavailableError: a shard is down; the other shards' parts are committed.
        """
        self._write(True, ids, vectors, payloads, texts, marker, position)

    def _write(
        self,
        replace: bool,
        ids: Any,
        vectors: Any,
        payloads: Sequence[Any] | None,
        texts: Sequence[str] | None,
        marker: dict[str, Any] | None,
        position: int | None,
    ) -> None:
        keys = check_ids(ids)
        if marker is not None:
            marker = check_marker(marker)
        if position is not None and (
            isinstance(position, bool) or not isinstance(position, (int, np.integer))
        ):
            raise ValueError(f"position must be an integer, got {position!r}")
        vectors, texts = self._vectors_and_texts(vectors, texts)
        x, offsets = self._store.check(vectors, len(keys))
        rows = check_payloads(payloads, len(keys))
        if texts is not None and len(texts) != len(keys):
            raise ValueError(f"got {len(texts)} texts for {len(keys)} ids")
        where = shards.split_rows(shards.shard_of(keys, self.n_shards), self.n_shards)
        with self._write_lock:
            if self._shared_quantizer and len(keys) >= self.train_size and not len(self):
                self._train_quantizer(x)
            if marker is not None and position is None:
                position = max(self._positions) + 1
            if not replace:
                self._refuse_existing(keys, where)
            send = [i for i in range(self.n_shards) if len(where[i]) or marker is not None]

            def part(i: int) -> tuple[Any, ...]:
                r = where[i]
                return (
                    replace,
                    [keys[j] for j in r],
                    shards.take_rows(x, offsets, r),
                    [rows[j] for j in r],
                    None if texts is None else [texts[j] for j in r],
                    marker,
                    None if marker is None else int(position),  # type: ignore[arg-type]
                )

            done, missing = self._shards.gather("write", part, shards=send, partial=True)
            for i, pos in zip(send, done, strict=True):
                if pos is not None:
                    self._positions[i] = int(pos)
            if missing:
                raise ShardUnavailableError(self.name, missing, "the write")

    def _vectors_and_texts(self, vectors: Any, texts: Any) -> tuple[Any, list[str] | None]:
        """(vectors to store, texts for the shards' lexical indexes or None), encoding texts
        here once so that shards never load the encoder."""
        if texts is None:
            if vectors is None:
                raise ValueError("give vectors= or texts=")
            return vectors, None
        texts = encoders.check_texts(texts, "texts")
        lexical = self.lexical and self.text_field is None
        if vectors is not None:
            if not lexical:
                raise ValueError(
                    "give exactly one of vectors= or texts= (both together index the texts "
                    "lexically only, and this collection's lexical index does not take them)"
                )
            return vectors, texts
        enc = self.encoder
        if enc is None:
            raise ValueError(f"collection {self.name!r} has no encoder: give vectors")
        return enc.encode_documents(texts), (texts if lexical else None)

    def _refuse_existing(self, keys: list[str], where: list[np.ndarray]) -> None:
        for key, there in zip(keys, self._per_key("contains", keys, where), strict=True):
            if there:
                raise ValueError(f"id {key!r} already exists (use upsert to replace it)")

    def _by_shard(
        self, method: str, keys: list[str], where: list[np.ndarray] | None = None, ask: Any = None
    ) -> tuple[list[int], list[np.ndarray], list[Any]]:
        """Calls ``method(the shard's keys)`` on each shard that holds some of ``keys`` (and
        passes ``ask(i)`` when given): (the shards asked, each shard's rows of ``keys``, their
        results). ``where``: the rows by shard, when the caller routed ``keys`` already."""
        if where is None:
            where = shards.split_rows(shards.shard_of(keys, self.n_shards), self.n_shards)
        send = [i for i in range(self.n_shards) if len(where[i]) and (ask is None or ask(i))]
        if not send:
            return [], where, []
        results, _ = self._shards.gather(
            method, lambda i: ([keys[j] for j in where[i]],), shards=send
        )
        return send, where, results

    def _per_key(
        self, method: str, keys: list[str], where: list[np.ndarray] | None = None, ask: Any = None
    ) -> list[Any]:
        """A per-key method's results (``contains``, ``get``) in the order of ``keys``; None
        for keys of shards not asked."""
        send, where, results = self._by_shard(method, keys, where, ask)
        out: list[Any] = [None] * len(keys)
        for i, part in zip(send, results, strict=True):
            for j, value in zip(where[i], part, strict=True):
                out[j] = value
        return out

    def set_marker(self, marker: dict[str, Any], position: int | None = None) -> None:
        """Commits ``marker`` on every shard at ``position`` (see ``upsert``)."""
        marker = check_marker(marker)
        with self._write_lock:
            position = max(self._positions) + 1 if position is None else int(position)
            args: tuple[Any, ...] = (True, [], None, [], None, marker, position)
            done, missing = self._shards.gather("write", args, partial=True)
            for i, pos in enumerate(done):
                if pos is not None:
                    self._positions[i] = int(pos)
            if missing:
                raise ShardUnavailableError(self.name, missing, "the marker")

    @property
    def marker(self) -> dict[str, Any] | None:
        """The least advanced shard's marker: where a job that feeds the collection resumes."""
        markers, _ = self._shards.gather("marker")
        least = min(markers, key=lambda m: shards._position(m))
        return None if least is None else least.get("marker")

    @property
    def position(self) -> int:
        """The most advanced shard's position (0 before any marker'd write)."""
        return max(self._positions)

    def wait_ready(self, timeout: float) -> None:
        """Waits until every shard answers (a Ray-hosted shard restarting after a crash);
        raises ShardUnavailableError after ``timeout`` seconds."""
        wait = getattr(self._shards, "wait_ready", None)
        if wait is not None:
            wait(timeout)

    def settled(self, keys: list[str], position: int) -> list[bool]:
        """Whether each key is held by its shard from before ``position``: False for an id a
        shard took at or after ``position`` (a resumed job re-sends that write, and the shard
        skips it), True for an id it held before. For a job's duplicate checks."""
        held = self._per_key("contains", keys, ask=lambda i: self._positions[i] < position)
        return [bool(there) for there in held]

    def delete(self, ids: Any) -> int:
        """Deletes the given ids (absent ones are ignored); how many were deleted."""
        keys = check_ids(ids)
        with self._write_lock:
            _, _, done = self._by_shard("delete", keys)
        return int(sum(done))

    def get(self, ids: Any) -> list[Record | None]:
        """Stored items for ``ids``, aligned with them; None where an id is absent."""
        return self._per_key("get", check_ids(ids))

    def set_fusion(
        self,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
    ) -> Fusion:
        """Sets the default hybrid fusion on every shard (each stores it)."""
        if not self.lexical:
            raise ValueError(
                f"collection {self.name!r} has no lexical index: there is no hybrid search "
                "whose fusion to set"
            )
        new = Fusion.make(fusion, weight, rrf_k, depth, base=self._fusion)
        self._shards.gather("set_fusion", (new.to_dict(),))
        self._fusion = new
        return new

    @property
    def durability(self) -> str:
        return self._durability

    @durability.setter
    def durability(self, value: str) -> None:
        self._shards.gather("setting", ("durability", value))
        self._durability = value

    @property
    def checkpoint_bytes(self) -> int | None:
        return self._checkpoint_bytes

    @checkpoint_bytes.setter
    def checkpoint_bytes(self, value: int) -> None:
        """Each shard's checkpoint threshold (bytes of log)."""
        if value != self._checkpoint_bytes:
            self._shards.gather("setting", ("checkpoint_bytes", max(1, value // self.n_shards)))
            self._checkpoint_bytes = value

    def reserve(self, n: int) -> None:
        self._shards.gather("reserve", (max(0, int(n)) // self.n_shards + 1,))

    def flush(self) -> None:
        """Checkpoints every shard."""
        self._shards.gather("flush")

    def verify(self) -> int:
        """Hashes every shard's files (``Collection.verify``); how many files were checked."""
        counts, _ = self._shards.gather("verify")
        return int(sum(counts))

    def refresh(self) -> None:
        self._shards.gather("refresh")

    def close(self) -> None:
        """Checkpoints and closes every shard (a Ray-hosted set also ends its actors)."""
        if self.closed:
            return
        self.closed = True
        try:
            # A shard that is down has nothing unsaved to lose: its log holds every write it
            # acknowledged, and its next open replays it.
            _, missing = self._shards.gather("close", partial=True)
            if missing:
                log.warning("collection %r: shards %s were down at close", self.name, missing)
        finally:
            self._shards.close()

    # ---- searches -------------------------------------------------------------------------------
    def search(
        self,
        vector: Any = None,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        mode: str = "dense",
        text: str | None = None,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
        partial: bool = False,
        **params: Any,
    ) -> Hits:
        """``Collection.search`` over every shard, merged into the exact top-k.

        Args:
            partial: when a shard is down, answer from the others (the result's ``partial``
                is then True and ``missing_shards`` names them) instead of raising
                ``ShardUnavailableError``.
        """
        is_text = isinstance(vector, str)
        batch_vector: Any = [vector] if is_text or self.multi_vector else vector
        if not is_text and not self.multi_vector and vector is not None:
            batch_vector = self._store.query(vector)[None, :]
        res = self.search_batch(
            batch_vector if vector is not None else None,
            k,
            where=where,
            mode=mode,
            texts=None if text is None else [text],
            fusion=fusion,
            weight=weight,
            rrf_k=rrf_k,
            depth=depth,
            partial=partial,
            **params,
        )
        return Hits(res[0], missing_shards=res.missing_shards)

    def search_batch(
        self,
        vectors: Any = None,
        k: int = 10,
        *,
        where: dict[str, Any] | None = None,
        mode: str = "dense",
        texts: Sequence[str] | None = None,
        fusion: str | None = None,
        weight: float | None = None,
        rrf_k: float | None = None,
        depth: int | None = None,
        partial: bool = False,
        **params: Any,
    ) -> SearchResult:
        """``Collection.search_batch`` over every shard, merged; ``partial`` as in ``search``."""
        mode = check_mode(mode)
        k = check_k(k)
        plan = fusion_for(mode, fusion, weight, rrf_k, depth, base=self._fusion)
        queries, given = vectors, texts
        if _are_texts(vectors) and mode != "lexical":
            enc = self.encoder
            if enc is None:
                raise ValueError(f"collection {self.name!r} has no encoder: search it with vectors")
            if texts is not None:
                raise ValueError("give the query text once: as the query itself or as texts=")
            texts = encoders.check_texts(vectors, "queries")
            queries = enc.encode_queries(texts)
        options: dict[str, Any] = {"where": where, **params}
        if mode == "dense":
            if given is not None:
                options["texts"] = given  # refused by the shards in the engine's words
            return self._fan_out(queries, k, options, partial)
        if mode == "lexical":
            return self._fan_out(
                queries, k, {**options, "mode": "lexical", "texts": texts}, partial
            )
        assert plan is not None
        deep = max(k, plan.depth)
        dense = self._fan_out(queries, deep, options, partial)
        lexical = self._fan_out(None, deep, {**options, "mode": "lexical", "texts": texts}, partial)
        return shards.fuse(plan, dense, lexical, k)

    def _fan_out(
        self, queries: Any, k: int, options: dict[str, Any], partial: bool
    ) -> SearchResult:
        results, missing = self._shards.gather("search", (queries, k, options), partial=True)
        if missing and not partial:
            raise ShardUnavailableError(self.name, missing, "the search")
        if len(missing) == self.n_shards:
            raise ShardUnavailableError(self.name, missing, "the search (no shard answered)")
        merged = shards.merge(results, k)
        if missing:
            return SearchResult(
                merged.ids, merged.scores, merged.payloads, missing_shards=tuple(missing)
            )
        return merged


def _are_texts(queries: Any) -> bool:
    return isinstance(queries, (list, tuple)) and bool(queries) and isinstance(queries[0], str)
