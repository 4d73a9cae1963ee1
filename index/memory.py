"""Byte accounting: what a part of an index or collection holds in RAM and on disk.

``Usage`` is ``{"ram": bytes, "disk": bytes}``; a breakdown is ``{part: Usage}``. RAM is what the
process holds: ``nbytes`` of the used rows of numpy arrays (memory-mapped arrays are disk-backed
pages the kernel can drop and count 0), and for Python containers an estimate from
``sys.getsizeof`` of the container plus its elements, sampled (``SAMPLE`` elements) so that it
stays cheap for millions of them. Disk is the size of the files a part owns.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import mmap
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

Usage = dict[str, int]
Parts = dict[str, Usage]

SAMPLE = 256  # elements measured when a container's size is estimated
INT_BYTES = sys.getsizeof(1 << 40)  # a Python int that is not one of the cached small ones
_EMPTY_LIST = sys.getsizeof([])


def usage(ram: int = 0, disk: int = 0) -> Usage:
    return {"ram": int(ram), "disk": int(disk)}


def is_mapped(a: np.ndarray) -> bool:
    """Whether an array's memory is a file mapping (``np.load(mmap_mode=...)``, or a view)."""
    base: Any = a
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def drop_pages(a: np.ndarray) -> None:
    """Tells the kernel this process is done with a memory-mapped array's pages for now
    (``madvise(MADV_DONTNEED)``): they leave the process's resident set, stay in the page cache,
    and are read back from the file if touched again. For a read-only file map only (never
    for anonymous memory, whose contents it would discard); a no-op for other arrays or where
    the C library has no ``madvise``."""
    if a.size == 0 or not is_mapped(a) or a.flags.writeable or _madvise is None:
        return
    page = mmap.PAGESIZE
    start, end = a.ctypes.data, a.ctypes.data + a.nbytes
    first, last = -(-start // page) * page, end // page * page  # whole pages inside the array
    if last > first:
        _madvise(first, last - first, _MADV_DONTNEED)


def _find_madvise() -> Any:
    try:
        f = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    f.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return f


_MADV_DONTNEED = 4  # Linux
_madvise = _find_madvise() if sys.platform.startswith("linux") else None


def array_ram(a: np.ndarray, rows: int | None = None) -> int:
    """Bytes of the first ``rows`` rows (all when None) held in RAM; 0 when memory-mapped."""
    if is_mapped(a):
        return 0
    if rows is None or a.ndim == 0:
        return int(a.nbytes)
    per_row = a.itemsize * (int(np.prod(a.shape[1:])) if a.ndim > 1 else 1)
    return int(min(rows, a.shape[0]) * per_row)


def _mean_size(items: Iterable[Any], size: Callable[[Any], int]) -> float:
    sample = list(itertools.islice(items, SAMPLE))
    return sum(map(size, sample)) / len(sample) if sample else 0.0


def int_container_ram(c: Any) -> int:
    """A set of ints, or a dict of int -> int: the container plus an int object per element
    (per key and value for a dict)."""
    per = 2 * INT_BYTES if isinstance(c, Mapping) else INT_BYTES
    return sys.getsizeof(c) + len(c) * per


def str_key_ram(d: Mapping[str, Any], value_bytes: int = INT_BYTES) -> int:
    """A dict with string keys: the dict, its keys (mean size of a sample) and ``value_bytes``
    per value."""
    key = _mean_size(iter(d), sys.getsizeof)
    return sys.getsizeof(d) + round(len(d) * (key + value_bytes))


@functools.lru_cache(maxsize=128)
def _dict_size(n: int) -> int:
    return sys.getsizeof({i: None for i in range(n)})


def deep_size(obj: Any) -> int:
    """Bytes of a JSON-like value and everything it holds, from its content: a container counts
    as one of its length built by insertion (``sys.getsizeof`` of a dict or list depends on how
    it grew; this way equal payloads count the same, however they were made)."""
    if isinstance(obj, dict):
        return _dict_size(len(obj)) + sum(deep_size(k) + deep_size(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return _EMPTY_LIST + 8 * len(obj) + sum(deep_size(v) for v in obj)
    return sys.getsizeof(obj)


def values_ram(d: Mapping[Any, Any]) -> int:
    """A dict of int -> JSON-like values: the dict, its keys, and the mean deep size of a sample
    of its values times their count."""
    value = _mean_size(iter(d.values()), deep_size)
    return sys.getsizeof(d) + round(len(d) * (INT_BYTES + value))


def file_sizes(directory: Path) -> dict[str, int]:
    """Size of every file under ``directory`` by its path relative to it ('/'-separated);
    files that vanish meanwhile (a checkpoint replacing them) are left out."""
    out: dict[str, int] = {}
    if not directory.is_dir():
        return out
    for root, _, names in os.walk(directory):
        for name in names:
            p = Path(root, name)
            try:
                out[p.relative_to(directory).as_posix()] = p.stat().st_size
            except OSError:
                continue
    return out


def disk_parts(directory: Path | None, part_of: Callable[[str], str]) -> dict[str, int]:
    """Bytes on disk per part: every file under ``directory``, attributed by ``part_of(name)``."""
    out: dict[str, int] = {}
    if directory is None:
        return out
    for name, size in file_sizes(directory).items():
        part = part_of(name)
        out[part] = out.get(part, 0) + size
    return out


def combine(ram: Mapping[str, int], disk: Mapping[str, int]) -> Parts:
    """``{part: Usage}`` from RAM and disk bytes per part, parts sorted by name."""
    return {p: usage(ram.get(p, 0), disk.get(p, 0)) for p in sorted({*ram, *disk})}


def total(parts: Mapping[str, Usage]) -> Usage:
    return usage(sum(u["ram"] for u in parts.values()), sum(u["disk"] for u in parts.values()))
