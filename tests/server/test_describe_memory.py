"""The server's describe carries the per-component byte figures of ``Collection.describe``."""

from __future__ import annotations

import numpy as np
import pytest

from engine import Engine
from server import Client
from server.convert import memory_from, set_memory
from server.pb import vecdex_pb2 as pb


@pytest.mark.parametrize(
    "index, multi",
    [("hnsw:M=8", False), ("muvera:k_sim=2,d_proj=4,r_reps=2,inner=flat", True)],
)
def test_remote_describe_has_the_servers_figures(tmp_path, start_server, index, multi):
    eng = Engine(tmp_path / "served")
    srv = start_server(engine=eng)
    client = Client(srv.address)
    rng = np.random.default_rng(0)
    n = 40
    items = (
        [rng.normal(size=(2 + i % 3, 8)).astype(np.float32) for i in range(n)]
        if multi
        else rng.normal(size=(n, 8)).astype(np.float32)
    )
    rem = client.create_collection("c", dim=8, index=index, lexical=not multi)
    texts = None if multi else [f"text {i} about cats" for i in range(n)]
    rem.add([f"i{i}" for i in range(n)], items, [{"k": i} for i in range(n)], texts=texts)
    local = eng.open_collection("c")  # the very collection the server holds
    mine, theirs = local.describe(), rem.describe()
    assert theirs["memory"] == mine["memory"]
    assert list(theirs["memory"]) == list(mine["memory"])  # the same order as well
    assert theirs["bytes_on_disk"] == mine["bytes_on_disk"]
    assert ("tokens" in theirs["memory"]) is multi and ("lexical" in theirs["memory"]) is not multi
    assert theirs["memory"]["index"]["parts"]
    client.close()


def test_memory_maps_round_trip():
    memory = {
        "vectors": {"ram": 40, "disk": 168},
        "index": {
            "ram": 7,
            "disk": 9,
            "parts": {"graph": {"ram": 5, "disk": 8}, "labels": {"ram": 2, "disk": 1}},
        },
        "ids": {"ram": 3, "disk": 0},
    }
    info = pb.CollectionInfo()
    set_memory(info, memory)
    assert dict(info.ram_bytes)["index.graph"] == 5 and dict(info.disk_bytes)["vectors"] == 168
    back = memory_from(pb.CollectionInfo.FromString(info.SerializeToString()))
    assert back == memory and list(back) == list(memory)
