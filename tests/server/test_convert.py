"""Wire conversions and the exception -> status mapping, without a server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from engine.errors import CollectionLockedError, ReadOnlyError
from engine.filters import FilterError
from index.storage import CorruptFileError
from server.convert import (
    BadRequest,
    dict_to_struct,
    multi_array,
    parse_query,
    result_from,
    struct_to_dict,
)
from server.pb import vecdex_pb2 as pb
from server.servicer import VecDexServicer, status_of


def test_struct_round_trip_keeps_ints_ints():
    payload = {
        "year": 2020,
        "score": 0.25,
        "neg": -3,
        "flags": [True, False],
        "mixed": [1, "x", None, 2.5],
        "nested": {"deep": {"n": 7}},
        "big": 2.0**60,
        "np": np.float32(1.5),
        "npi": np.int64(4),
    }
    back = struct_to_dict(dict_to_struct(payload))
    assert back == {**payload, "np": 1.5, "npi": 4}
    assert type(back["year"]) is int and type(back["score"]) is float
    assert type(back["nested"]["deep"]["n"]) is int
    assert type(back["big"]) is float  # past 2**53 a double is not an exact int


def test_parse_query_kinds_and_errors():
    assert parse_query(pb.Query(text="hi"), "q", 10, 4) == ("text", "hi")
    kind, x = parse_query(pb.Query(vector=pb.Vector(values=[1, 2])), "q", 10, 4)
    assert kind == "vector" and x.dtype == np.float32 and x.tolist() == [1, 2]
    mv = pb.MultiVector(rows=[pb.Vector(values=[1, 2]), pb.Vector(values=[3, 4])])
    kind, x = parse_query(pb.Query(multi_vector=mv), "q", 10, 4)
    assert kind == "multi_vector" and x.shape == (2, 2)
    with pytest.raises(BadRequest, match=r"q.multi_vector.rows\[1\] has 1 values"):
        multi_array(
            pb.MultiVector(rows=[pb.Vector(values=[1, 2]), pb.Vector(values=[3])]),
            "q.multi_vector",
            4,
        )
    with pytest.raises(BadRequest) as info:
        multi_array(pb.MultiVector(rows=[pb.Vector(values=[1])] * 5), "m", 4)
    assert info.value.code == "RESOURCE_EXHAUSTED"
    with pytest.raises(BadRequest, match="q.text has 11 characters"):
        parse_query(pb.Query(text="x" * 11), "q", 10, 4)


def test_result_from_pads_like_the_engine():
    msg = pb.SearchBatchResponse()
    msg.results.add().hits.add(id="a", score=0.5)
    msg.results.add()
    res = result_from(msg, 3)
    assert res.ids.tolist() == [["a", None, None], [None, None, None]]
    assert res.scores[0, 0] == 0.5 and np.isneginf(res.scores[:, 1:]).all()
    assert res.scores.dtype == np.float32 and res.payloads == [[{}], []]
    assert res[0][0].id == "a" and res[1] == []


@pytest.mark.parametrize(
    "error, code",
    [
        (CorruptFileError("/data/x.npy", "bad checksum"), grpc.StatusCode.DATA_LOSS),
        (ReadOnlyError("c", "closed"), grpc.StatusCode.FAILED_PRECONDITION),
        (CollectionLockedError("c", "/d/.lock", 42), grpc.StatusCode.FAILED_PRECONDITION),
        (NotImplementedError(), grpc.StatusCode.UNIMPLEMENTED),
        (FilterError("unknown operator"), grpc.StatusCode.INVALID_ARGUMENT),
        (TypeError("k must be an integer"), grpc.StatusCode.INVALID_ARGUMENT),
        (KeyError("secret internals"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_mapping(error, code):
    got, message = status_of(error)
    assert got == code
    if code == grpc.StatusCode.INTERNAL:
        assert "secret" not in message  # internals stay in the server log
    if isinstance(error, FilterError):
        assert message.startswith("where: ")


def test_collection_info_says_whether_multi_vector():
    """CollectionInfo carries the collection's own flag (the client reads it, never the spec)."""
    base = {"name": "c", "dim": 4, "metric": "cosine", "count": 0}
    for index, multi in [("muvera:k_sim=5", True), ("hnsw:M=16", False), ("chamfer", True)]:
        info = VecDexServicer._info({**base, "index": index, "multi_vector": multi})
        assert info.multi_vector is multi
        assert pb.CollectionInfo.FromString(info.SerializeToString()).multi_vector is multi
    assert VecDexServicer._info({**base, "index": "flat"}).multi_vector is False


def test_corrupt_file_error_is_the_index_one():
    """The server matches the re-exported class, so it is the very class index raises."""
    import engine

    assert engine.CorruptFileError is CorruptFileError
    assert status_of(CorruptFileError("/d/x", "bad"))[0] == grpc.StatusCode.DATA_LOSS
