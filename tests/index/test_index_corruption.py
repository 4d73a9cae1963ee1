"""Corrupted, truncated and crafted index directories: a CorruptFileError naming the file, never
a crash.

Damage the manifest's SHA-256 catches (a truncated file, a flipped byte) is tested in-process.
Crafted directories whose manifest was rewritten to match (so only the structural checks can
catch them) would reach hnswlib or faiss if a check regressed; they are all loaded in one child
process, so a segfault fails the test instead of killing pytest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import index
from index.hnsw_format import HEADER, check_hnsw_file

DIM = 16
HNSW = "hnsw:M=8,ef_construction=64"
STATES = {  # name: (spec, vectors); IVF nlist=4 trains at 156, IVF-PQ nbits=4 at 624
    "flat": ("flat", 400),
    "hnsw": (HNSW, 400),
    "ivf-untrained": ("ivf:nlist=4", 120),
    "ivf-trained": ("ivf:nlist=4", 400),
    "ivfpq-untrained": ("ivf:nlist=4,pq=4,nbits=4", 300),
    "ivfpq-trained": ("ivf:nlist=4,pq=4,nbits=4", 800),
}
FILES = {
    "flat": ["labels.npy", "vectors.npy"],
    "hnsw": ["graph.bin", "labels.npy"],
    "ivf-untrained": ["buffer.npy", "labels.npy"],
    "ivf-trained": ["centroids.npy", "codes.npy", "ids.npy", "list_sizes.npy"],
    "ivfpq-untrained": ["buffer.npy", "labels.npy"],
    "ivfpq-trained": [
        "centroids.npy",
        "codes.npy",
        "ids.npy",
        "list_sizes.npy",
        "pq_centroids.npy",
    ],
}


# ---- helpers ---------------------------------------------------------------------------------
def manifest(d: Path) -> dict:
    return json.loads((d / "index.json").read_text())


def write_manifest(d: Path, m: dict) -> None:
    (d / "index.json").write_text(json.dumps(m))


def rewrite(d: Path, name: str, data: bytes) -> None:
    """Replaces a data file and recomputes its manifest entry, so the SHA-256 cannot help."""
    (d / name).write_bytes(data)
    m = manifest(d)
    m["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_manifest(d, m)


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, make_clustered) -> dict[str, Path]:
    """One saved directory per index kind and state (with removals, so tombstones are saved)."""
    base, _ = make_clustered(800, DIM, seed=21, n_centres=20)
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for name, (spec, n) in STATES.items():
        idx = index.from_spec(spec, DIM, "l2")
        idx.add(base[:n], np.arange(n) * 2)
        idx.remove(np.arange(0, n, 20) * 2)
        if name.startswith("ivf"):
            assert idx.trained == name.endswith("-trained")
        idx.save(root / name)
        assert sorted(manifest(root / name)["files"]) == FILES[name]
        out[name] = root / name
    return out


# ---- what the SHA-256 catches (in-process) ---------------------------------------------------
@pytest.mark.parametrize("state", STATES)
def test_truncated_file_is_named(saved, tmp_path, state):
    for i, name in enumerate(FILES[state]):
        d = copy(saved[state], tmp_path / str(i))
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(index.CorruptFileError, match=rf"{name}: size \d+ bytes.*truncated"):
            index.load(d)


@pytest.mark.parametrize("state", STATES)
def test_flipped_byte_is_named(saved, tmp_path, state):
    for i, name in enumerate(FILES[state]):
        d = copy(saved[state], tmp_path / str(i))
        data = bytearray((d / name).read_bytes())
        data[len(data) // 2] ^= 0x40
        (d / name).write_bytes(bytes(data))
        with pytest.raises(index.CorruptFileError, match=rf"{name}: SHA-256 does not match"):
            index.load(d)


@pytest.mark.parametrize("state", STATES)
def test_missing_file_is_named(saved, tmp_path, state):
    d = copy(saved[state], tmp_path / "d")
    name = FILES[state][-1]
    (d / name).unlink()
    with pytest.raises(index.CorruptFileError, match=rf"{name}: file listed in the manifest is"):
        index.load(d)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda m: b"{not json", r"index\.json: not valid JSON"),
        (lambda m: b"[1, 2]", r"index\.json: manifest is not a JSON object"),
        (lambda m: {**m, "format_version": 99}, r"index\.json: unsupported format_version 99"),
        (lambda m: {**m, "config": "flat"}, r"index\.json: manifest lacks a config object"),
        (lambda m: {**m, "files": []}, r"manifest 'files' is not a mapping"),
        (lambda m: {**m, "files": {"../x.npy": {}}}, r"manifest names an invalid file '\.\./x"),
        (lambda m: {**m, "files": {".hidden": {}}}, r"manifest names an invalid file '\.hidden'"),
        (lambda m: {**m, "files": {"vectors.npy": {}}}, r"vectors\.npy: manifest entry lacks"),
        (lambda m: {**m, "count": 5}, r"index\.json: count 5 but the files hold 380 vectors"),
        (lambda m: {**m, "config": {**m["config"], "kind": "annoy"}}, r"unknown index kind"),
        (lambda m: {**m, "config": {**m["config"], "metric": "dot"}}, r"unknown metric 'dot'"),
        (lambda m: {**m, "config": {**m["config"], "nlist": 4}}, r"unknown flat parameter"),
    ],
)
def test_bad_manifest_is_named(saved, tmp_path, damage, match):
    d = copy(saved["flat"], tmp_path / "d")
    new = damage(manifest(d))
    (d / "index.json").write_bytes(new if isinstance(new, bytes) else json.dumps(new).encode())
    with pytest.raises(index.CorruptFileError, match=match):
        index.load(d)


def test_npy_header_claiming_a_huge_array_is_refused_before_allocating(saved, tmp_path):
    """A crafted .npy header (SHA-256 recomputed) must not make numpy allocate terabytes."""
    d = copy(saved["flat"], tmp_path / "d")
    data = (d / "vectors.npy").read_bytes()
    buf = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, DIM)}
    np.lib.format.write_array_header_1_0(buf, header)
    rewrite(d, "vectors.npy", buf.getvalue() + data[128:])
    with pytest.raises(index.CorruptFileError, match=r"vectors\.npy: header says shape"):
        index.load(d)


def test_npy_with_python_objects_is_refused(saved, tmp_path):
    d = copy(saved["flat"], tmp_path / "d")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    rewrite(d, "labels.npy", buf.getvalue())
    with pytest.raises(
        index.CorruptFileError, match=r"labels\.npy: (holds Python objects|not a readable)"
    ):
        index.load(d)


# ---- crafted hnswlib graphs: the structural check, in-process (pure numpy) -------------------
def graph_layout(raw: bytes) -> tuple[dict, list[int], list[int]]:
    """Header fields by name, each element's top level, and where its upper link lists start."""
    names = "off0 max_el count per_el label_off data_off maxlevel entry max_m max_m0 m mult efc"
    head = dict(zip(names.split(), HEADER.unpack_from(raw), strict=True))
    per_level = head["max_m"] * 4 + 4
    pos = HEADER.size + head["count"] * head["per_el"]
    levels, starts = [], []
    for _ in range(head["count"]):
        size = struct.unpack_from("<I", raw, pos)[0]
        levels.append(size // per_level)
        starts.append(pos + 4)
        pos += 4 + size
    return head, levels, starts


def with_header(raw: bytes, **changes) -> bytes:
    head, _, _ = graph_layout(raw)
    head.update(changes)
    out = bytearray(raw)
    HEADER.pack_into(out, 0, *head.values())
    return bytes(out)


def set_links(raw: bytes, offset: int, ids: list[int]) -> bytes:
    """Overwrites the link list at ``offset`` (uint16 count + flags, then uint32 ids)."""
    out = bytearray(raw)
    struct.pack_into("<H", out, offset, len(ids))
    struct.pack_into(f"<{len(ids)}I", out, offset + 4, *ids)
    return bytes(out)


def _upper(raw: bytes) -> tuple[int, int]:
    """(an element on level >= 1, an element on level 0)."""
    _, levels, _ = graph_layout(raw)
    return next(i for i, v in enumerate(levels) if v >= 1), levels.index(0)


def _level0_oob(raw):
    h, _, _ = graph_layout(raw)
    return set_links(raw, HEADER.size, [1, h["count"] + 7])


def _upper_oob(raw):
    h, _, starts = graph_layout(raw)
    return set_links(raw, starts[_upper(raw)[0]], [h["count"] + 7])


def _too_many_links(raw):
    h, _, _ = graph_layout(raw)
    out = bytearray(raw)
    struct.pack_into("<H", out, HEADER.size, h["max_m0"] + 1)
    return bytes(out)


def _entry_below_top(raw):
    return with_header(raw, entry=_upper(raw)[1])


def _links_below_level(raw):
    up, low = _upper(raw)
    return set_links(raw, graph_layout(raw)[2][up], [low])


def _one_more_dim(raw):
    """The header of a graph whose vectors have one more float32 (dim 17)."""
    h, _, _ = graph_layout(raw)
    return with_header(raw, label_off=h["label_off"] + 4, per_el=h["per_el"] + 4)


def _odd_link_list_size(raw):
    """Element 0's upper link-list size set to 5 bytes (not a whole number of lists)."""
    at = graph_layout(raw)[2][0] - 4
    return raw[:at] + struct.pack("<I", 5) + raw[at + 4 :]


GRAPH_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "level0-neighbour-out-of-range": (_level0_oob, r"level 0: neighbour id out of range"),
    "upper-neighbour-out-of-range": (_upper_oob, r"upper levels: neighbour id out of range"),
    "too-many-links": (_too_many_links, r"level 0: list 0 claims 17 links \(max 16\)"),
    "entry-out-of-range": (
        lambda r: with_header(r, entry=graph_layout(r)[0]["count"]),
        r"entry point \d+ out of range",
    ),
    "entry-below-top-level": (_entry_below_top, r"entry point \d+ is on level 0, max level is"),
    "link-to-a-lower-level": (
        _links_below_level,
        r"upper levels: a level-1 list links an element below it",
    ),
    "max-level-lie": (
        lambda r: with_header(r, maxlevel=graph_layout(r)[0]["maxlevel"] + 1),
        r"entry point \d+ is on level \d+, max level is",
    ),
    "implausible-max-level": (lambda r: with_header(r, maxlevel=-5), r"implausible max level"),
    "mult-zero": (lambda r: with_header(r, mult=0.0), r"header field mult=0\.0"),
    "mult-nan": (lambda r: with_header(r, mult=float("nan")), r"header field mult=nan"),
    "wrong-dim-header": (
        _one_more_dim,
        r"header field label_offset=\d+, expected \d+ for dim=16, M=8",
    ),
    "wrong-M-header": (lambda r: with_header(r, max_m0=32), r"header field maxM0=32, expected 16"),
    "nonzero-offset": (lambda r: with_header(r, off0=8), r"header field offsetLevel0=8"),
    "count-too-large": (
        lambda r: with_header(r, count=graph_layout(r)[0]["count"] + 1000),
        r"truncated: \d+ elements need",
    ),
    "truncated-link-lists": (lambda r: r[:-37], r"truncated in the link lists|link list of"),
    "truncated-level0": (lambda r: r[: HEADER.size + 1000], r"truncated: \d+ elements need"),
    "shorter-than-header": (lambda r: r[:50], r"50 bytes is shorter than the hnswlib header"),
    "trailing-bytes": (lambda r: r + bytes(8), r"8 unexpected bytes after the last element"),
    "odd-link-list-size": (_odd_link_list_size, r"element 0 has a link list of 5 bytes"),
}


@pytest.mark.parametrize("case", GRAPH_DAMAGE)
def test_hnsw_format_rejects_crafted_graph(saved, tmp_path, case):
    damage, match = GRAPH_DAMAGE[case]
    raw = (saved["hnsw"] / "graph.bin").read_bytes()
    check_hnsw_file(saved["hnsw"] / "graph.bin", DIM, 8)  # the pristine file passes
    (tmp_path / "graph.bin").write_bytes(damage(raw))
    with pytest.raises(index.CorruptFileError, match=rf"graph\.bin: (?:{match})"):
        check_hnsw_file(tmp_path / "graph.bin", DIM, 8)


def test_hnsw_format_empty_graph(tmp_path):
    idx = index.from_spec(HNSW, DIM)
    idx.save(tmp_path / "empty")
    raw = (tmp_path / "empty" / "graph.bin").read_bytes()
    assert check_hnsw_file(tmp_path / "empty" / "graph.bin", DIM, 8) == 0
    (tmp_path / "g.bin").write_bytes(with_header(raw, entry=0))
    with pytest.raises(index.CorruptFileError, match="empty graph with entry point 0"):
        check_hnsw_file(tmp_path / "g.bin", DIM, 8)


# ---- crafted directories, loaded end to end in a child process -------------------------------


def _config_lie(**changes):
    def damage(d: Path) -> None:
        m = manifest(d)
        m["config"].update(changes)
        write_manifest(d, m)

    return damage


def _graph(case: str):
    return lambda d: rewrite(d, "graph.bin", GRAPH_DAMAGE[case][0]((d / "graph.bin").read_bytes()))


def _foreign_graph(dim: int = DIM, M: int = 8):
    """A graph.bin from another hnsw index (another dim or M), with a matching manifest entry."""

    def damage(d: Path) -> None:
        other = index.HNSWIndex(dim, "l2", M=M, ef_construction=64)
        other.add(np.random.default_rng(3).normal(size=(400, dim)), np.arange(400) * 2)
        other.save(d / "other")
        rewrite(d, "graph.bin", (d / "other" / "graph.bin").read_bytes())
        shutil.rmtree(d / "other")

    return damage


def _labels(values: np.ndarray) -> Callable[[Path], None]:
    return lambda d: rewrite(d, "labels.npy", npy_bytes(values))


def _array(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    return lambda d: rewrite(d, name, npy_bytes(fn(np.load(d / name))))


def _truncate_consistently(name: str) -> Callable[[Path], None]:
    return lambda d: rewrite(d, name, (d / name).read_bytes()[:-40])


def _dim_lie_file(state: str, dim: int) -> str:
    """The file whose shape contradicts a manifest that lies about the dimension."""
    if "pq" in state and dim % 4:
        return "index.json"  # pq=4 must divide dim: the config itself is refused
    first = {"flat": "vectors.npy", "hnsw": "graph.bin"}
    return first.get(state, "buffer.npy" if "untrained" in state else "centroids.npy")


# (state, damage, the file the error must name)
CRAFTED: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # The manifest lies about the dimension (config dim edited, nothing recomputed).
    **{
        f"{state}-dim-{label}": (state, _config_lie(dim=dim), _dim_lie_file(state, dim))
        for state in STATES
        for label, dim in (("plus-1", DIM + 1), ("doubled", 2 * DIM), ("halved", DIM // 2))
    },
    # ...and about the other parameters the files' layout depends on.
    "hnsw-M-lie": ("hnsw", _config_lie(M=12), "graph.bin"),
    "ivf-trained-nlist-lie": ("ivf-trained", _config_lie(nlist=5), "centroids.npy"),
    "ivfpq-trained-pq-lie": ("ivfpq-trained", _config_lie(pq=8), "codes.npy"),
    "ivfpq-trained-nbits-lie": ("ivfpq-trained", _config_lie(nbits=5), "codes.npy"),
    "ivfpq-trained-flat-lie": ("ivfpq-trained", _config_lie(pq=0), "codes.npy"),
    "ivf-trained-pq-lie": ("ivf-trained", _config_lie(pq=4, nbits=4), "codes.npy"),
    # Crafted graphs with a correct SHA-256 in a rewritten manifest.
    **{f"hnsw-graph-{case}": ("hnsw", _graph(case), "graph.bin") for case in GRAPH_DAMAGE},
    "hnsw-graph-of-another-dim": ("hnsw", _foreign_graph(dim=DIM * 2, M=8), "graph.bin"),
    "hnsw-graph-of-another-M": ("hnsw", _foreign_graph(M=4), "graph.bin"),
    "hnsw-labels-not-in-graph": ("hnsw", _labels(np.array([2, 4, 10**9])), "graph.bin"),
    "hnsw-duplicate-labels": ("hnsw", _labels(np.array([2, 4, 4])), "labels.npy"),
    "hnsw-negative-labels": ("hnsw", _labels(np.array([2, -4])), "labels.npy"),
    "hnsw-labels-2d": ("hnsw", _labels(np.array([[2, 4]])), "labels.npy"),
    "hnsw-labels-float": ("hnsw", _labels(np.array([2.0, 4.0])), "labels.npy"),
    # Consistent manifests over inconsistent arrays.
    **{
        f"{state}-{name}-truncated": (state, _truncate_consistently(name), name)
        for state in STATES
        for name in FILES[state]
        if name != "graph.bin"
    },
    "flat-labels-short": ("flat", _array("labels.npy", lambda a: a[:-1]), "labels.npy"),
    "flat-vectors-nan": ("flat", _array("vectors.npy", lambda a: a * np.nan), "vectors.npy"),
    "flat-vectors-f64": ("flat", _array("vectors.npy", lambda a: a.astype("f8")), "vectors.npy"),
    "ivf-untrained-labels-short": (
        "ivf-untrained",
        _array("labels.npy", lambda a: a[:-1]),
        "buffer.npy",
    ),
    "ivf-trained-centroids-inf": (
        "ivf-trained",
        _array("centroids.npy", lambda a: a * np.inf),
        "centroids.npy",
    ),
    "ivf-trained-list-sizes-lie": (
        "ivf-trained",
        _array("list_sizes.npy", lambda a: a + 1),
        "list_sizes.npy",
    ),
    "ivf-trained-negative-list-size": (
        "ivf-trained",
        _array("list_sizes.npy", lambda a: a * np.array([-1, 1, 1, 3])),
        "list_sizes.npy",
    ),
    "ivf-trained-codes-short": ("ivf-trained", _array("codes.npy", lambda a: a[:-1]), "codes.npy"),
    "ivf-trained-codes-narrow": (
        "ivf-trained",
        _array("codes.npy", lambda a: a[:, :-1]),
        "codes.npy",
    ),
    "ivf-trained-duplicate-ids": (
        "ivf-trained",
        _array("ids.npy", lambda a: np.r_[a[:-1], a[:1]]),
        "ids.npy",
    ),
    "ivfpq-trained-pq-centroids-shape": (
        "ivfpq-trained",
        _array("pq_centroids.npy", lambda a: a[:, :-1]),
        "pq_centroids.npy",
    ),
    "ivfpq-trained-pq-centroids-nan": (
        "ivfpq-trained",
        _array("pq_centroids.npy", lambda a: a * np.nan),
        "pq_centroids.npy",
    ),
}


@pytest.fixture(scope="module")
def child_results(saved, tmp_path_factory, run_in_child) -> dict[str, dict]:
    """Builds every crafted directory, then loads them all in one child process."""
    root = tmp_path_factory.mktemp("crafted")
    jobs = [["pristine-" + s, str(saved[s])] for s in STATES]
    for name, (state, damage, _) in CRAFTED.items():
        d = copy(saved[state], root / name)
        damage(d)
        jobs.append([name, str(d)])
    return run_in_child(jobs, allowed=50)


@pytest.mark.parametrize("state", STATES)
def test_pristine_directories_load_in_the_child(child_results, state):
    assert child_results["pristine-" + state]["error"] is None


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_directory_is_refused_naming_the_file(child_results, case):
    got = child_results[case]
    assert got["error"] == "CorruptFileError", got
    file = CRAFTED[case][2]
    assert f"{os.sep}{case}{os.sep}{file}: " in got["message"], got
