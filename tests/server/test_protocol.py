"""``engine.CollectionLike``: the embedded and the remote collection both implement it.

mypy checks the signatures (``engine/protocol.py`` and ``server/client.py``); these tests check
the members at run time and that the values they report agree across the wire.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from engine import Collection, CollectionLike, Engine
from server import Client, RemoteCollection


def test_shared_methods_take_the_same_arguments():
    """Same names, kinds and defaults (``Collection.add`` may take more, e.g. ``marker``)."""
    for method in ("add", "upsert", "delete", "get", "search", "search_batch", "set_fusion"):
        want = inspect.signature(getattr(CollectionLike, method)).parameters
        for cls in (Collection, RemoteCollection):
            got = inspect.signature(getattr(cls, method)).parameters
            for name, p in want.items():
                assert name in got, (cls.__name__, method, name)
                assert (got[name].kind, got[name].default) == (p.kind, p.default), (
                    cls.__name__,
                    method,
                    name,
                )


@pytest.mark.parametrize(
    "index, multi", [("flat", False), ("muvera:k_sim=3,d_proj=8,r_reps=4,inner=flat", True)]
)
def test_embedded_and_remote_agree_on_the_description(tmp_path, start_server, index, multi):
    eng = Engine(tmp_path / "embedded")
    srv = start_server()
    client = Client(srv.address)
    rng = np.random.default_rng(0)
    items = (
        [rng.normal(size=(3, 8)).astype(np.float32) for _ in range(5)]
        if multi
        else rng.normal(size=(5, 8)).astype(np.float32)
    )
    cols: list[CollectionLike] = [
        side.create_collection("c", dim=8, index=index) for side in (eng, client)
    ]
    for col in cols:
        assert isinstance(col, CollectionLike)
        col.add([f"i{i}" for i in range(5)], items)
    emb, rem = cols
    assert emb.multi_vector is rem.multi_vector is multi
    assert emb.describe()["multi_vector"] is rem.describe()["multi_vector"] is multi
    again = client.open_collection("c")
    assert again.multi_vector is multi
    for name in ("name", "dim", "metric", "index_spec", "encoder_spec", "text_field", "lexical"):
        assert getattr(emb, name) == getattr(rem, name), name
    assert emb.fusion == rem.fusion and len(emb) == len(rem) == 5
    client.close()
    eng.close()
