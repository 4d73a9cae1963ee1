"""A structural check of hnswlib's binary index file, run before hnswlib parses it.

hnswlib trusts its file completely: a wrong dimension, a short file or a neighbour id out of range
reads out of bounds. This module walks the whole layout (hnswlib 0.8 ``saveIndex``) with numpy and
raises ``CorruptFileError`` naming the file instead.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from .memory import drop_pages
from .storage import CorruptFileError

# offsetLevel0, max_elements, cur_element_count, size_data_per_element, label_offset, offsetData
# (size_t x 6), maxlevel (int), enterpoint_node (uint32), maxM, maxM0, M (size_t x 3),
# mult (double), ef_construction (size_t)
HEADER = struct.Struct("<6Q i I 3Q d Q")
_BLOCK = 65536  # level-0 lists checked at once
_NO_ENTRY = 0xFFFFFFFF  # enterpoint_node of an empty graph (tableint -1)


def check_hnsw_file(path: str | Path, dim: int, M: int) -> int:
    """Validates an hnswlib file for vectors of ``dim`` float32 and graph degree ``M``.

    Returns:
        The number of elements (live and deleted) the file holds.

    Raises:
        CorruptFileError: naming ``path`` and the first inconsistency found.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER.size:
        raise CorruptFileError(path, f"{size} bytes is shorter than the hnswlib header")
    # Read through a map, a block of elements at a time, and let the pages go at the end: the
    # check's memory stays small beside the graph hnswlib then loads.
    data = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        return _check(path, data, dim, M)
    finally:
        drop_pages(data)


def _check(path: Path, data: np.ndarray, dim: int, M: int) -> int:
    (
        off0,
        _max_el,
        count,
        per_el,
        label_off,
        data_off,
        maxlevel,
        entry,
        max_m,
        max_m0,
        m,
        mult,
        _efc,
    ) = HEADER.unpack_from(data[: HEADER.size].tobytes())
    links0 = max_m0 * 4 + 4
    expect = {
        "offsetLevel0": (off0, 0),
        "M": (m, M),
        "maxM": (max_m, M),
        "maxM0": (max_m0, 2 * M),
        "offsetData": (data_off, links0),
        "label_offset": (label_off, links0 + 4 * dim),
        "size_data_per_element": (per_el, links0 + 4 * dim + 8),
    }
    for field, (got, want) in expect.items():
        if got != want:
            raise CorruptFileError(
                path, f"header field {field}={got}, expected {want} for dim={dim}, M={M}"
            )
    # hnswlib draws levels with mult = 1/ln(M); a crafted 0 or NaN makes new levels unbounded.
    if M > 1 and not math.isclose(mult, 1.0 / math.log(M), rel_tol=1e-9):
        raise CorruptFileError(path, f"header field mult={mult}, expected 1/ln({M})")
    level0_end = HEADER.size + count * per_el
    if level0_end > data.size:
        raise CorruptFileError(
            path, f"truncated: {count} elements need {level0_end} bytes, file has {data.size}"
        )
    if count == 0 and (entry != _NO_ENTRY or maxlevel != -1):
        raise CorruptFileError(path, f"empty graph with entry point {entry}, level {maxlevel}")
    if count and not (0 <= entry < count):
        raise CorruptFileError(path, f"entry point {entry} out of range for {count} elements")
    if count and not (0 <= maxlevel < 64):
        raise CorruptFileError(path, f"implausible max level {maxlevel}")
    level0 = data[HEADER.size : level0_end].reshape(count, per_el)
    for a in range(0, count, _BLOCK):
        _check_links(path, level0[a : a + _BLOCK, :links0], max_m0, count, "level 0", first=a)

    # Upper levels: per element a uint32 byte size, then that many bytes of link lists.
    per_level = max_m * 4 + 4
    pos = level0_end
    levels = np.zeros(count, dtype=np.int64)
    upper_blocks = []
    for i in range(count):
        if pos + 4 > data.size:
            raise CorruptFileError(path, f"truncated in the link lists of element {i}")
        size = int(data[pos : pos + 4].view(np.uint32)[0])
        pos += 4
        if size:
            if size % per_level or size // per_level > maxlevel:
                raise CorruptFileError(path, f"element {i} has a link list of {size} bytes")
            if pos + size > data.size:
                raise CorruptFileError(path, f"truncated in the link lists of element {i}")
            upper_blocks.append(data[pos : pos + size].reshape(-1, per_level))
            levels[i] = size // per_level
            pos += size
    if pos != data.size:
        raise CorruptFileError(path, f"{data.size - pos} unexpected bytes after the last element")
    # hnswlib starts every search at the entry point on the top level and, on level l, only
    # follows links to elements that have a list on level l; anything else reads out of bounds.
    if count and levels[entry] != maxlevel:
        raise CorruptFileError(
            path, f"entry point {entry} is on level {levels[entry]}, max level is {maxlevel}"
        )
    if upper_blocks:
        row_level = np.concatenate([np.arange(1, n + 1) for n in levels.tolist() if n])
        _check_links(
            path, np.concatenate(upper_blocks), max_m, count, "upper levels", levels, row_level
        )
    return int(count)


def _check_links(
    path: Path,
    block: np.ndarray,
    max_links: int,
    count: int,
    where: str,
    levels: np.ndarray | None = None,
    row_level: np.ndarray | None = None,
    first: int = 0,
) -> None:
    """Each row: uint16 link count (+ flag bytes), then max_links uint32 neighbour ids.

    With ``levels`` (each element's top level) and ``row_level`` (the level of each row), also
    checks that every neighbour exists on the level of the list that names it.
    """
    if block.shape[0] == 0:
        return
    block = np.ascontiguousarray(block)
    n_links = block[:, :2].copy().view(np.uint16)[:, 0]
    if (n_links > max_links).any():
        bad = first + int(np.argmax(n_links > max_links))
        raise CorruptFileError(
            path, f"{where}: list {bad} claims {int(n_links[bad])} links (max {max_links})"
        )
    ids = block[:, 4 : 4 + 4 * max_links].copy().view(np.uint32)
    used = np.arange(max_links)[None, :] < n_links[:, None]
    if (ids[used] >= count).any():
        raise CorruptFileError(path, f"{where}: neighbour id out of range (>= {count})")
    if levels is not None and row_level is not None:
        too_low = used & (levels[np.where(used, ids, 0)] < row_level[:, None])
        if too_low.any():
            row = int(np.argmax(too_low.any(axis=1)))
            raise CorruptFileError(
                path, f"{where}: a level-{int(row_level[row])} list links an element below it"
            )
