"""Between protobuf messages and the engine's Python values: payloads, vectors, queries, hits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from google.protobuf import struct_pb2

from engine.fusion import Fusion
from engine.results import Hit, Record, SearchResult

from .pb import vecdex_pb2 as pb

_EXACT_INT = 2**53  # doubles hold every integer below this exactly


class BadRequest(Exception):
    """A refused request; ``code`` names a ``grpc.StatusCode``, e.g. ``INVALID_ARGUMENT``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> BadRequest:
    return BadRequest("INVALID_ARGUMENT", message)


def too_big(message: str) -> BadRequest:
    return BadRequest("RESOURCE_EXHAUSTED", message)


# ---- Struct <-> dict ---------------------------------------------------------------------------
def value_to_py(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        x = v.number_value
        # Struct numbers are doubles: integral ones come back as ints, as JSON would give them.
        return int(x) if x.is_integer() and abs(x) < _EXACT_INT else x
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [value_to_py(x) for x in v.list_value.values]
    return None  # null_value, or unset


def struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    return {k: value_to_py(v) for k, v in s.fields.items()}


def dict_to_struct(d: Mapping[str, Any] | None, out: struct_pb2.Struct | None = None) -> Any:
    """Fills ``out`` (or a new Struct) from a JSON-like dict; numpy scalars become floats/ints.

    Raises:
        TypeError: a value that is not JSON-like.
    """
    s = struct_pb2.Struct() if out is None else out
    if d:
        fields = s.fields
        for k, v in d.items():
            t = type(v)  # the common plain types first (exact types: bool is not an int here)
            if t is int or t is float:
                fields[k].number_value = v
            elif t is str:
                fields[k].string_value = v
            else:
                _set_value(fields[k], v)
    return s


def _set_value(val: struct_pb2.Value, v: Any) -> None:
    # Struct.update() does the same, a little slower; this also takes numpy values.
    if v is None:
        val.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, (bool, np.bool_)):
        val.bool_value = bool(v)
    elif isinstance(v, (int, float, np.integer, np.floating)):
        val.number_value = float(v)
    elif isinstance(v, str):
        val.string_value = v
    elif isinstance(v, Mapping):
        val.struct_value.SetInParent()
        dict_to_struct(v, val.struct_value)
    elif isinstance(v, (list, tuple, np.ndarray)):
        val.list_value.SetInParent()
        for x in v.tolist() if isinstance(v, np.ndarray) else v:
            _set_value(val.list_value.values.add(), x)
    else:
        raise TypeError(f"{type(v).__name__} is not a JSON-like payload value")


def optional_struct(msg: Any, field: str) -> dict[str, Any] | None:
    """The dict of a Struct field of ``msg``, or None when the field is unset or empty."""
    if not msg.HasField(field):
        return None
    d = struct_to_dict(getattr(msg, field))
    return d or None


# ---- vectors -----------------------------------------------------------------------------------
def vector_array(v: pb.Vector, field: str) -> np.ndarray:
    """A (d,) float32 array from a Vector; BadRequest naming ``field`` if empty or non-finite."""
    x = np.array(v.values, dtype=np.float32)
    if x.size == 0:
        raise invalid(f"{field} is empty")
    if not np.isfinite(x).all():
        raise invalid(f"{field} contains NaN or inf (at {int(np.argmax(~np.isfinite(x)))})")
    return x


def multi_array(mv: pb.MultiVector, field: str, max_rows: int) -> np.ndarray:
    """An (n, d) float32 array from a MultiVector (rows of equal length)."""
    n = len(mv.rows)
    if n == 0:
        raise invalid(f"{field} has no rows")
    if n > max_rows:
        raise too_big(f"{field} has {n} rows, over the server limit of {max_rows}")
    rows = [vector_array(r, f"{field}.rows[{i}]") for i, r in enumerate(mv.rows)]
    d = rows[0].shape[0]
    for i, r in enumerate(rows):
        if r.shape[0] != d:
            raise invalid(f"{field}.rows[{i}] has {r.shape[0]} values, rows[0] has {d}")
    return np.stack(rows)


def to_vector(x: Any, out: pb.Vector | None = None) -> pb.Vector:
    v = pb.Vector() if out is None else out
    v.values.extend(np.asarray(x, dtype=np.float32).reshape(-1).tolist())
    return v


def to_multi(x: Any, out: pb.MultiVector | None = None) -> pb.MultiVector:
    mv = pb.MultiVector() if out is None else out
    for row in np.asarray(x, dtype=np.float32).reshape(len(x), -1):
        mv.rows.add().values.extend(row.tolist())
    return mv


# ---- queries -----------------------------------------------------------------------------------
TEXT, VECTOR, MULTI = "text", "vector", "multi_vector"


def parse_query(q: pb.Query, field: str, max_text_chars: int, max_rows: int) -> tuple[str, Any]:
    """(kind, value) of a Query: a str, a (d,) array or an (n, d) array."""
    kind = q.WhichOneof("kind")
    if kind is None:
        raise invalid(f"{field} is empty: set one of text, vector or multi_vector")
    if kind == TEXT:
        if not q.text.strip():
            raise invalid(f"{field}.text is empty")
        if len(q.text) > max_text_chars:
            raise too_big(
                f"{field}.text has {len(q.text)} characters, over the limit of {max_text_chars}"
            )
        return TEXT, q.text
    if kind == VECTOR:
        return VECTOR, vector_array(q.vector, f"{field}.vector")
    return MULTI, multi_array(q.multi_vector, f"{field}.multi_vector", max_rows)


def set_query(q: pb.Query, value: Any) -> None:
    """Fills a Query from a str, a (d,) vector or an (n, d) multi-vector."""
    if isinstance(value, str):
        q.text = value
        return
    x = np.asarray(value, dtype=np.float32)
    if x.ndim == 1:
        to_vector(x, q.vector)
    elif x.ndim == 2:
        to_multi(x, q.multi_vector)
    else:
        raise ValueError(f"a query is a string, a (d,) vector or an (n, d) array, got {x.shape}")


# ---- results -----------------------------------------------------------------------------------
def hits_message(
    hits: Iterable[Hit], out: pb.SearchResponse, payloads: bool = True
) -> pb.SearchResponse:
    """Fills ``out`` with the hits (their payloads too unless ``payloads`` is False)."""
    add = out.hits.add
    if not payloads:
        for h in hits:
            add(id=h.id, score=h.score)
        return out
    for h in hits:
        m = add(id=h.id, score=h.score)
        if h.payload:
            dict_to_struct(h.payload, m.payload)
    return out


def hits_from(msg: pb.SearchResponse) -> list[Hit]:
    return [Hit(h.id, float(h.score), struct_to_dict(h.payload)) for h in msg.hits]


def result_from(msg: pb.SearchBatchResponse, k: int) -> SearchResult:
    """A SearchResult (ids (m, k), None-padded; scores -inf-padded) from a batch response."""
    m = len(msg.results)
    ids = np.full((m, k), None, dtype=object)
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    payloads: list[list[dict[str, Any]]] = []
    for i, r in enumerate(msg.results):
        n = len(r.hits)
        ids[i, :n] = [h.id for h in r.hits]
        scores[i, :n] = [h.score for h in r.hits]
        payloads.append([struct_to_dict(h.payload) for h in r.hits])
    return SearchResult(ids, scores, payloads, missing_shards=tuple(msg.missing_shards))


def record_message(rec: Record | None, id: str, out: pb.Record) -> None:
    out.id = id
    if rec is None:
        return
    out.found = True
    x = np.asarray(rec.vector)
    if x.ndim == 2:
        to_multi(x, out.multi_vector)
    else:
        to_vector(x, out.vector)
    if rec.payload:
        dict_to_struct(rec.payload, out.payload)


def record_from(msg: pb.Record) -> Record | None:
    if not msg.found:
        return None
    if msg.HasField("multi_vector"):
        vector = np.array([r.values for r in msg.multi_vector.rows], dtype=np.float32)
    else:
        vector = np.array(msg.vector.values, dtype=np.float32)
    return Record(msg.id, vector, struct_to_dict(msg.payload))


# ---- lexical and hybrid settings ---------------------------------------------------------------
LEXICAL_STRINGS = ("language", "stopwords", "method")
LEXICAL_NUMBERS = ("k1", "b")


def lexical_options(msg: pb.LexicalOptions) -> dict[str, Any]:
    """The options a LexicalOptions sets (unset fields left out: the engine's defaults)."""
    out: dict[str, Any] = {f: getattr(msg, f) for f in LEXICAL_STRINGS if getattr(msg, f)}
    out.update({f: getattr(msg, f) for f in LEXICAL_NUMBERS if msg.HasField(f)})
    return out


def set_lexical_options(out: pb.LexicalOptions, options: Mapping[str, Any]) -> None:
    """Fills a LexicalOptions from a checked lexical configuration (strings and numbers)."""
    for f in LEXICAL_STRINGS:
        if options.get(f) is not None:
            setattr(out, f, str(options[f]))
    for f in LEXICAL_NUMBERS:
        if options.get(f) is not None:
            setattr(out, f, float(options[f]))


def fusion_message(f: Fusion, out: pb.Fusion | None = None) -> pb.Fusion:
    m = pb.Fusion() if out is None else out
    m.method, m.weight, m.rrf_k, m.depth = f.method, f.weight, f.rrf_k, f.depth
    return m


def fusion_from(msg: pb.Fusion) -> Fusion:
    return Fusion(msg.method, float(msg.weight), float(msg.rrf_k), int(msg.depth))


def fusion_args(msg: Any) -> dict[str, Any]:
    """``fusion``, ``weight``, ``rrf_k``, ``depth`` as a request sets them; unset ones left out."""
    out: dict[str, Any] = {"fusion": msg.fusion} if msg.fusion else {}
    out.update({f: getattr(msg, f) for f in ("weight", "rrf_k", "depth") if msg.HasField(f)})
    return out


# ---- bytes per component ------------------------------------------------------------------------
def set_memory(info: pb.CollectionInfo, memory: Mapping[str, Any]) -> None:
    """Fills ``ram_bytes`` / ``disk_bytes`` from ``describe()["memory"]`` (parts as
    ``component.part``)."""
    for name, c in memory.items():
        info.ram_bytes[name], info.disk_bytes[name] = int(c["ram"]), int(c["disk"])
        for part, u in c.get("parts", {}).items():
            key = f"{name}.{part}"
            info.ram_bytes[key], info.disk_bytes[key] = int(u["ram"]), int(u["disk"])


# The order ``Collection.describe`` lists components in.
COMPONENTS = ("vectors", "tokens", "index", "ids", "payloads", "lexical", "log", "other")


def memory_from(info: pb.CollectionInfo) -> dict[str, Any]:
    """``describe()["memory"]`` from a CollectionInfo's ``ram_bytes`` / ``disk_bytes``."""
    keys = set(info.ram_bytes) | set(info.disk_bytes)
    top = [k for k in keys if "." not in k]
    order = {name: i for i, name in enumerate(COMPONENTS)}
    out: dict[str, Any] = {}
    for name in sorted(top, key=lambda k: (order.get(k, len(order)), k)):
        c: dict[str, Any] = {
            "ram": info.ram_bytes.get(name, 0),
            "disk": info.disk_bytes.get(name, 0),
        }
        prefix = name + "."
        parts = sorted(k[len(prefix) :] for k in keys if k.startswith(prefix))
        if parts:
            c["parts"] = {
                p: {
                    "ram": info.ram_bytes.get(prefix + p, 0),
                    "disk": info.disk_bytes.get(prefix + p, 0),
                }
                for p in parts
            }
        out[name] = c
    return out
