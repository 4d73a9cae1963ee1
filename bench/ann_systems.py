"""The systems ``bench.ann`` compares, each behind one small adapter.

An adapter prepares its input untimed (``prepare``), builds (``build``, timed), optionally persists
(``persist``, timed apart), and hands out search callables for one parameter value (``set_param``
then ``batch_fn`` / ``single_fn``) so that the timed loop calls the library and nothing else. The
results a callable returns are turned into int64 labels (row numbers of the database) afterwards,
untimed, by ``batch_labels`` / ``single_labels``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SearchFn = Callable[[np.ndarray], Any]


class Skip(Exception):
    """A peer that cannot run here (not installed, fails to import); the message says why."""


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


class System(ABC):
    """One system under test. ``params`` are its build parameters (recorded in the results)."""

    family: ClassVar[str]
    single_variants: ClassVar[tuple[str, ...]] = ("default",)

    def __init__(self, workdir: Path, dim: int, params: dict[str, Any]) -> None:
        self.workdir = workdir
        self.dim = dim
        self.params = params
        self.value: int | None = None
        self.base: Any = None

    def prepare(self, base: np.ndarray) -> None:
        """Untimed input preparation (ids, Arrow tables); the vectors are already normalised."""
        self.base = base

    @abstractmethod
    def build(self) -> None:
        """Builds the index over the prepared vectors (timed)."""

    def persist(self) -> dict[str, Any] | None:
        """Writes the index to disk (timed apart); returns how to reopen it, or None."""
        return None

    def set_param(self, value: int | None) -> None:
        """Sets the search parameter (``ef`` or ``nprobe``) for the callables handed out next;
        None means the library's default."""
        self.value = value

    def default_value(self) -> int | None:
        """The parameter value the library searches with when given none (None: unknown/none)."""
        return None

    @abstractmethod
    def batch_fn(self, k: int) -> SearchFn:
        """A callable searching all (m, d) queries in one call."""

    @abstractmethod
    def single_fn(self, k: int, variant: str) -> SearchFn:
        """A callable searching one (d,) query."""

    @abstractmethod
    def batch_labels(self, res: Any, m: int, k: int) -> np.ndarray:
        """(m, k) int64 database rows from what ``batch_fn`` returned, -1 padded."""

    @abstractmethod
    def single_labels(self, res: Any, k: int) -> np.ndarray:
        """(k,) int64 database rows from what ``single_fn`` returned, -1 padded."""

    def versions(self) -> dict[str, str]:
        return {}


def _pad(rows: list[int], k: int) -> np.ndarray:
    out = np.full(k, -1, dtype=np.int64)
    out[: min(k, len(rows))] = rows[:k]
    return out


def _str_ids_to_labels(ids: Any, m: int, k: int) -> np.ndarray:
    out = np.full((m, k), -1, dtype=np.int64)
    for i, row in enumerate(ids):
        for j, s in enumerate(list(row)[:k]):
            if s is not None:
                out[i, j] = int(s)
    return out


# ---- vecdex ----------------------------------------------------------------------------------
class Vecdex(System):
    """vecdex through the public Collection API (string ids, ``metric="ip"``)."""

    family = "vecdex"

    def __init__(self, workdir: Path, dim: int, params: dict[str, Any]) -> None:
        super().__init__(workdir, dim, params)
        import engine  # imported before the RSS baseline, like every adapter's library

        self.engine_mod = engine
        kind = str(params["index"]).split(":", 1)[0]
        self.key = {"hnsw": "ef", "ivf": "nprobe"}.get(kind)
        self.col: Any = None

    def default_value(self) -> int | None:
        from index import parse_spec

        return None if self.key is None else parse_spec(self.col.index_spec)[1].get(self.key)

    def prepare(self, base: np.ndarray) -> None:
        super().prepare(base)
        self.ids = [str(i) for i in range(base.shape[0])]

    def build(self) -> None:
        self.engine = self.engine_mod.Engine(self.workdir / "vecdex")
        self.col = self.engine.create_collection(
            "bench",
            dim=self.dim,
            metric=self.params.get("metric", "ip"),
            index=self.params["index"],
        )
        self.col.add(self.ids, self.base)

    def persist(self) -> dict[str, Any]:
        self.col.flush()
        return {"engine": str(self.workdir / "vecdex"), "collection": "bench"}

    def _kw(self) -> dict[str, Any]:
        return {} if self.key is None or self.value is None else {self.key: self.value}

    def batch_fn(self, k: int) -> SearchFn:
        return partial(self.col.search_batch, k=k, **self._kw())

    def single_fn(self, k: int, variant: str) -> SearchFn:
        return partial(self.col.search, k=k, **self._kw())

    def batch_labels(self, res: Any, m: int, k: int) -> np.ndarray:
        return _str_ids_to_labels(res.ids, m, k)

    def single_labels(self, res: Any, k: int) -> np.ndarray:
        return _pad([int(h.id) for h in res], k)

    def versions(self) -> dict[str, str]:
        return {"vecdex": version("vecdex")}


# ---- hnswlib ---------------------------------------------------------------------------------
class Hnswlib(System):
    """Raw hnswlib, inner-product space; single queries with its default threads and with 1."""

    family = "hnswlib"
    single_variants = ("default", "threads=1")

    def __init__(self, workdir: Path, dim: int, params: dict[str, Any]) -> None:
        super().__init__(workdir, dim, params)
        import hnswlib

        self.hnswlib = hnswlib

    def build(self) -> None:
        n = self.base.shape[0]
        self.g = self.hnswlib.Index(space="ip", dim=self.dim)
        self.g.init_index(
            max_elements=n,
            M=self.params["M"],
            ef_construction=self.params["ef_construction"],
            random_seed=100,
        )
        self.g.add_items(self.base, np.arange(n))

    def persist(self) -> dict[str, Any]:
        path = self.workdir / "hnswlib.bin"
        self.g.save_index(str(path))
        return {"path": str(path)}

    def set_param(self, value: int | None) -> None:
        super().set_param(value)
        self.g.set_ef(int(value or self.default_value()))

    def default_value(self) -> int:
        return 10  # hnswlib's ef until set_ef is called

    def batch_fn(self, k: int) -> SearchFn:
        return partial(self.g.knn_query, k=k)

    def single_fn(self, k: int, variant: str) -> SearchFn:
        if variant == "threads=1":
            return partial(self.g.knn_query, k=k, num_threads=1)
        return partial(self.g.knn_query, k=k)

    def batch_labels(self, res: Any, m: int, k: int) -> np.ndarray:
        return np.asarray(res[0], dtype=np.int64)

    def single_labels(self, res: Any, k: int) -> np.ndarray:
        return np.asarray(res[0][0], dtype=np.int64)

    def versions(self) -> dict[str, str]:
        return {"hnswlib": version("hnswlib")}


# ---- faiss -----------------------------------------------------------------------------------
class Faiss(System):
    """Raw faiss on the CPU: ``IndexFlatIP``, ``IndexHNSWFlat``, ``IndexIVFFlat`` / ``IVFPQ``."""

    family = "faiss"

    def __init__(self, workdir: Path, dim: int, params: dict[str, Any]) -> None:
        super().__init__(workdir, dim, params)
        import faiss

        self.faiss = faiss
        self.kind = params["kind"]

    def default_value(self) -> int | None:
        return {"hnsw": 16, "ivf": 1}.get(self.kind)  # efSearch / nprobe of a fresh faiss index

    def build(self) -> None:
        faiss = self.faiss
        ip = faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            self.ix = faiss.IndexFlatIP(self.dim)
        elif self.kind == "hnsw":
            self.ix = faiss.IndexHNSWFlat(self.dim, self.params["M"], ip)
            self.ix.hnsw.efConstruction = self.params["ef_construction"]
        else:
            self.quantizer = faiss.IndexFlatIP(self.dim)
            nlist, pq = self.params["nlist"], self.params.get("pq", 0)
            if pq:
                self.ix = faiss.IndexIVFPQ(self.quantizer, self.dim, nlist, pq, 8, ip)
            else:
                self.ix = faiss.IndexIVFFlat(self.quantizer, self.dim, nlist, ip)
            self.ix.train(self.base)  # faiss samples 256 points per centroid, as vecdex does
        self.ix.add(self.base)

    def set_param(self, value: int | None) -> None:
        super().set_param(value)
        if self.kind == "hnsw":
            self.ix.hnsw.efSearch = int(value or 16)
        elif self.kind == "ivf":
            self.ix.nprobe = int(value or 1)

    def batch_fn(self, k: int) -> SearchFn:
        return partial(self.ix.search, k=k)

    def single_fn(self, k: int, variant: str) -> SearchFn:
        search = self.ix.search
        return lambda v: search(v[None], k)

    def batch_labels(self, res: Any, m: int, k: int) -> np.ndarray:
        return np.asarray(res[1], dtype=np.int64)

    def single_labels(self, res: Any, k: int) -> np.ndarray:
        return np.asarray(res[1][0], dtype=np.int64)

    def versions(self) -> dict[str, str]:
        import faiss

        return {"faiss": getattr(faiss, "__version__", version("faiss-cpu"))}


# ---- Chroma ----------------------------------------------------------------------------------
class Chroma(System):
    """chromadb, in-process ``PersistentClient``; ``ip`` space, adds within its max batch size.

    Chroma reads ``ef_search`` when it loads a collection's HNSW segment, so each sweep point
    modifies the configuration and reopens the client (the next warm-up query loads the segment).
    """

    family = "chroma"

    def __init__(self, workdir: Path, dim: int, params: dict[str, Any]) -> None:
        super().__init__(workdir, dim, params)
        try:
            import chromadb  # noqa: F401
        except Exception as e:  # noqa: BLE001 - any import failure means the peer is skipped
            raise Skip(f"chromadb does not import: {type(e).__name__}: {e}") from None
        self.path = workdir / "chroma"
        self.ef: int | None = None

    def _open(self) -> None:
        import chromadb
        from chromadb.config import Settings

        self.client = chromadb.PersistentClient(
            path=str(self.path), settings=Settings(anonymized_telemetry=False)
        )

    def prepare(self, base: np.ndarray) -> None:
        super().prepare(base)
        self.ids = [str(i) for i in range(base.shape[0])]

    def build(self) -> None:
        self._open()
        self.col = self.client.create_collection(
            "bench",
            configuration={
                "hnsw": {
                    "space": "ip",
                    "max_neighbors": self.params["M"],
                    "ef_construction": self.params["ef_construction"],
                    "ef_search": 10,
                }
            },
            embedding_function=None,
        )
        self.ef = 10
        step = int(self.client.get_max_batch_size())
        self.params["add_batch"] = step
        for s in range(0, len(self.ids), step):
            self.col.add(ids=self.ids[s : s + step], embeddings=self.base[s : s + step])

    def set_param(self, value: int | None) -> None:
        super().set_param(value)
        value = value or self.default_value()
        if value == self.ef:
            return
        from chromadb.api.client import SharedSystemClient

        self.col.modify(configuration={"hnsw": {"ef_search": int(value)}})
        del self.col, self.client
        SharedSystemClient.clear_system_cache()
        self._open()
        self.col = self.client.get_collection("bench")
        got = (self.col.configuration.get("hnsw") or {}).get("ef_search")
        if got != value:
            raise RuntimeError(f"chroma did not take ef_search={value} (has {got})")
        self.ef = value

    def default_value(self) -> int:
        return 100  # chroma's ef_search when a collection is created without one

    def batch_fn(self, k: int) -> SearchFn:
        query = self.col.query
        return lambda q: query(query_embeddings=q, n_results=k, include=["distances"])

    def single_fn(self, k: int, variant: str) -> SearchFn:
        query = self.col.query
        return lambda v: query(query_embeddings=v[None], n_results=k, include=["distances"])

    def batch_labels(self, res: Any, m: int, k: int) -> np.ndarray:
        return _str_ids_to_labels(res["ids"], m, k)

    def single_labels(self, res: Any, k: int) -> np.ndarray:
        return _pad([int(s) for s in res["ids"][0]], k)

    def versions(self) -> dict[str, str]:
        return {"chromadb": version("chromadb")}


# ---- LanceDB ---------------------------------------------------------------------------------
class Lance(System):
    """LanceDB on a local directory with a vector index (``IVF_FLAT`` by default), dot distance.

    ``nprobe`` maps to ``nprobes``; ``refine_factor`` (re-ranking with the stored vectors) is a
    build-time choice recorded in the parameters.
    """

    family = "lancedb"

    def __init__(self, workdir: Path, dim: int, params: dict[str, Any]) -> None:
        super().__init__(workdir, dim, params)
        os.environ.setdefault("LANCEDB_LOG", "error")  # its deprecation warnings flood stderr
        try:
            import lancedb  # noqa: F401
        except Exception as e:  # noqa: BLE001 - any import failure means the peer is skipped
            raise Skip(f"lancedb does not import: {type(e).__name__}: {e}") from None
        self.path = workdir / "lancedb"

    def prepare(self, base: np.ndarray) -> None:
        import pyarrow as pa

        super().prepare(base)
        n = base.shape[0]
        flat = pa.array(np.ascontiguousarray(base).reshape(-1))
        self.table = pa.table(
            {
                "id": pa.array(np.arange(n, dtype=np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(flat, self.dim),
            }
        )

    def build(self) -> None:
        import lancedb
        from lancedb.index import HnswSq, IvfFlat, IvfPq

        db = lancedb.connect(str(self.path))
        self.tbl = db.create_table("bench", data=self.table)
        kind, nparts = self.params["index"], self.params["num_partitions"]
        if kind == "IVF_FLAT":
            cfg: Any = IvfFlat(distance_type="dot", num_partitions=nparts)
        elif kind == "IVF_PQ":
            cfg = IvfPq(
                distance_type="dot", num_partitions=nparts, num_sub_vectors=self.params["pq"]
            )
        elif kind == "IVF_HNSW_SQ":
            cfg = HnswSq(
                distance_type="dot",
                num_partitions=nparts,
                m=self.params["M"],
                ef_construction=self.params["ef_construction"],
            )
        else:
            raise ValueError(f"unsupported LanceDB index {kind!r}")
        self.tbl.create_index("vector", config=cfg)

    def _query(self, q: np.ndarray, k: int) -> Any:
        s = (
            self.tbl.search(q, vector_column_name="vector")
            .distance_type("dot")
            .limit(k)
            .select(["id"])
        )
        if self.value is not None:
            s = s.nprobes(int(self.value))
        if self.params.get("refine_factor"):
            s = s.refine_factor(int(self.params["refine_factor"]))
        return s.to_arrow()

    def batch_fn(self, k: int) -> SearchFn:
        return partial(self._query, k=k)

    def single_fn(self, k: int, variant: str) -> SearchFn:
        return partial(self._query, k=k)

    def batch_labels(self, res: Any, m: int, k: int) -> np.ndarray:
        out = np.full((m, k), -1, dtype=np.int64)
        if "query_index" not in res.column_names:  # one query: no query_index column
            ids = res["id"].to_numpy()[:k]
            out[0, : ids.size] = ids
            return out
        qi = res["query_index"].to_numpy().astype(np.int64)
        ids = res["id"].to_numpy()
        order = np.argsort(qi, kind="stable")
        qi, ids = qi[order], ids[order]
        pos = np.arange(qi.size) - np.searchsorted(qi, qi, side="left")
        keep = pos < k
        out[qi[keep], pos[keep]] = ids[keep]
        return out

    def single_labels(self, res: Any, k: int) -> np.ndarray:
        return _pad(res["id"].to_numpy().tolist(), k)

    def versions(self) -> dict[str, str]:
        return {"lancedb": version("lancedb"), "pylance": version("pylance")}


ADAPTERS: dict[str, type[System]] = {
    "vecdex": Vecdex,
    "hnswlib": Hnswlib,
    "faiss": Faiss,
    "chroma": Chroma,
    "lancedb": Lance,
}
