"""Chunked exact top-k (index.scoring) against one big numpy matmul, with awkward chunk sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import index
from index import scoring
from index.metric import Metric, prepare

METRICS = ("cosine", "ip", "l2")
# (base_chunk, query_chunk): one row at a time, chunks that do not divide n or m, one big block.
CHUNKS = [(1, 3), (5, 3), (17, 3), (17, 1), (None, 3), (None, 4096)]


def _data(n: int = 53, m: int = 11, dim: int = 8, seed: int = 5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), rng.normal(size=(m, dim)).astype(
        np.float32
    )


def _assert_same(got, want, labels_want=None):
    (gs, gl), (ws, wl) = got, want
    assert gs.dtype == np.float32 and gl.dtype == np.int64
    assert gs.shape == ws.shape and gl.shape == wl.shape
    np.testing.assert_array_equal(gl, wl if labels_want is None else labels_want)
    np.testing.assert_allclose(gs, ws, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("base_chunk", "query_chunk"), CHUNKS)
@pytest.mark.parametrize("k", [1, 7, 53, 60])  # 53 == n; 60 > n pads with -1 / -inf
def test_topk_equals_one_big_matmul(metric, base_chunk, query_chunk, k, oracle):
    base, queries = _data()
    m = Metric(metric)
    q, b = prepare(queries, m), prepare(base, m)
    got = scoring.topk(q, torch.from_numpy(b), k, m, base_chunk=base_chunk, query_chunk=query_chunk)
    want = oracle(base, np.arange(len(base)), queries, k, metric)
    _assert_same(got, want)
    if k > len(base):
        assert (got[1][:, len(base) :] == -1).all()
        assert np.isneginf(got[0][:, len(base) :]).all()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("base_chunk", [1, 5, 17])
def test_topk_valid_mask_never_returns_masked_rows(metric, base_chunk, oracle):
    base, queries = _data()
    m = Metric(metric)
    valid = np.random.default_rng(1).random(len(base)) < 0.2  # a handful of rows
    keep = np.flatnonzero(valid)
    k = len(keep) + 3  # more than the valid rows: the rest must be padding
    got_s, got_rows = scoring.topk(
        prepare(queries, m),
        torch.from_numpy(prepare(base, m)),
        k,
        m,
        valid=torch.from_numpy(valid),
        base_chunk=base_chunk,
        query_chunk=3,
    )
    want = oracle(base[keep], keep, queries, k, metric)
    _assert_same((got_s, got_rows), want)


def test_topk_tiny_block_bytes_derives_small_chunks(oracle):
    """``block_bytes`` bounds memory; a tiny bound must still give the exact answer."""
    base, queries = _data()
    got = scoring.topk(queries, torch.from_numpy(base), 4, Metric.IP, block_bytes=64, query_chunk=3)
    _assert_same(got, oracle(base, np.arange(len(base)), queries, 4, "ip"))


def test_topk_empty_base_is_all_padding():
    s, rows = scoring.topk(np.ones((2, 3), np.float32), torch.zeros((0, 3)), 4, Metric.IP)
    assert (rows == -1).all() and np.isneginf(s).all() and s.shape == (2, 4)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("base_chunk", "query_chunk"), [(1, 3), (5, 3), (17, 3)])
def test_flat_index_equals_one_big_matmul(metric, base_chunk, query_chunk, monkeypatch, oracle):
    """The same through FlatIndex, with the kernel's chunk sizes forced small."""
    real = scoring.topk

    def chunked(*args, **kwargs):
        kwargs.update(base_chunk=base_chunk, query_chunk=query_chunk)
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "topk", chunked)
    base, queries = _data()
    labels = np.arange(len(base), dtype=np.int64)[::-1] * 10 + 1  # labels are not rows
    idx = index.FlatIndex(base.shape[1], metric)
    idx.add(base[:30], labels[:30])
    idx.add(base[30:], labels[30:])  # two batches: one store, grown
    for k in (1, 10, 53, 70):
        _assert_same(idx.search(queries, k), oracle(base, labels, queries, k, metric))
    # A single query given as a 1-D vector is a batch of one.
    _assert_same(idx.search(queries[0], 5), oracle(base, labels, queries[:1], 5, metric))
    # With removed rows (tombstones) and with a filter that is not searched as a subset.
    idx.remove(labels[::3])
    live = np.ones(len(base), dtype=bool)
    live[::3] = False
    _assert_same(idx.search(queries, 60), oracle(base[live], labels[live], queries, 60, metric))
    idx.exact_filter_max, idx.exact_filter_fraction = 0, 0.0
    allowed = labels[live][::2]
    rows = np.isin(labels, allowed)
    _assert_same(
        idx.search(queries, 40, allowed=allowed),
        oracle(base[rows], labels[rows], queries, 40, metric),
    )


def test_device_override(monkeypatch):
    """``VECDEX_DEVICE`` picks the device; a bad value is refused by name."""
    choose = scoring.device.__wrapped__  # bypass the once-per-process cache
    monkeypatch.setenv("VECDEX_DEVICE", "cpu")
    assert choose().type == "cpu"
    monkeypatch.setenv("VECDEX_DEVICE", "tpu")
    with pytest.raises(ValueError, match="VECDEX_DEVICE.*'tpu'"):
        choose()
    if not torch.cuda.is_available():
        monkeypatch.setenv("VECDEX_DEVICE", "cuda")
        with pytest.raises(RuntimeError, match="no CUDA device"):
            choose()
        assert scoring.to_device(np.ones((2, 2))).dtype == torch.float32
