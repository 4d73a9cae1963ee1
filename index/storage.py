"""Atomic files and self-describing manifests with a SHA-256 per file.

Every file an index or collection reads back is listed in its manifest with size and SHA-256, and
is verified before any native library (hnswlib, faiss) sees a byte of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 1 << 20


class CorruptFileError(ValueError):
    """A file on disk does not match its manifest, or is malformed; names the file."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temp name, fsync and rename, then fsyncs the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_file(path: str | os.PathLike[str]) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Saves an array as ``.npy`` (no pickle) and fsyncs it."""
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def save_npy_chunks(
    path: str | os.PathLike[str],
    shape: tuple[int, ...],
    dtype: Any,
    chunks: Iterable[np.ndarray],
) -> None:
    """Saves an array given as row chunks (concatenated in order: ``shape``) as ``.npy``, and
    fsyncs it: a large array is written without ever being whole in memory."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    rows = 0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            f.write(chunk.data)
            rows += chunk.shape[0]
        f.flush()
        os.fsync(f.fileno())
    if rows != (shape[0] if shape else 1):
        raise ValueError(f"{path}: wrote {rows} rows, expected {shape[0]}")


def save_npy_replace(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``save_npy`` to a temp name, then an atomic rename onto ``path`` (the old file may be
    memory-mapped by a reader, which keeps its pages)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_npy(tmp, array)
    os.replace(tmp, path)


def replace_npy_chunks(
    path: str | os.PathLike[str],
    shape: tuple[int, ...],
    dtype: Any,
    chunks: Iterable[np.ndarray],
) -> None:
    """``save_npy_chunks`` to a temp name (removed on failure), then an atomic rename onto
    ``path``: the old file may be memory-mapped by a reader, which keeps its pages."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_npy_chunks(tmp, shape, dtype, chunks)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def load_npy(
    path: str | os.PathLike[str],
    dtype: Any = None,
    ndim: int | None = None,
    mmap: bool = False,
) -> np.ndarray:
    """Loads a ``.npy`` file without pickle, checking dtype and rank; errors name the file."""
    _check_npy_size(path)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptFileError(path, f"not a readable .npy array ({e})") from None
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise CorruptFileError(path, f"dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if ndim is not None and arr.ndim != ndim:
        raise CorruptFileError(path, f"{arr.ndim}-D array, expected {ndim}-D")
    return arr


def _check_npy_size(path: str | os.PathLike[str]) -> None:
    """Checks that the shape in a ``.npy`` header matches the file's size, before numpy
    allocates the array it claims (a crafted header could ask for terabytes)."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
            offset = f.tell()
        size = os.path.getsize(path)
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise CorruptFileError(path, f"not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise CorruptFileError(path, f"holds Python objects (dtype {dtype}), refused")
    need = offset + math.prod(shape) * dtype.itemsize
    if need != size:
        raise CorruptFileError(
            path, f"header says shape {shape} of {dtype} ({need} bytes), file has {size} bytes"
        )


def check_finite_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Raises CorruptFileError if a float ``.npy`` file (loaded as ``array``, maybe a memory
    map) holds NaN or inf. Reads the file in chunks through ordinary reads, so that a mapped
    array's pages are not faulted into the process by the check. Skipped under
    ``verification("quick")``, which takes memory-mapped files' content unread."""
    if _verify.get() == "quick":  # the file's content is taken as it is (see ``verification``)
        return
    itemsize = array.dtype.itemsize
    per_row = itemsize * (int(np.prod(array.shape[1:])) if array.ndim > 1 else 1)
    if array.size == 0:
        return
    offset = os.path.getsize(path) - array.shape[0] * per_row
    step = max(1, CHUNK * 16 // per_row) * per_row
    with open(path, "rb") as f:
        f.seek(offset)
        while block := f.read(step):
            if not np.isfinite(np.frombuffer(block, dtype=array.dtype)).all():
                raise CorruptFileError(path, "contains NaN or inf")


def file_entry(path: str | os.PathLike[str]) -> dict[str, Any]:
    return {"size": os.path.getsize(path), "sha256": sha256_file(path)}


def write_manifest(directory: str | os.PathLike[str], name: str, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(
        Path(directory) / name, json.dumps(manifest, indent=2, sort_keys=True).encode()
    )


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(path, f"not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise CorruptFileError(path, "manifest is not a JSON object")
    return manifest


# How much ``verify_files`` checks when a collection or index opens (``verification``):
# "full" hashes every file; "quick" skips the SHA-256 of the files a loader memory-maps (vectors,
# tokens), checking their size only: those are never parsed by a native library, and reading
# them whole would cost the open a second per GB or more. ``verify_files(..., mapped=())`` names
# them; ``Collection.verify()`` / ``vecdex verify`` hash everything on demand.
VERIFY_MODES = ("full", "quick")
_verify: ContextVar[str] = ContextVar("vecdex_verify", default="full")


def check_verify(mode: str) -> str:
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {mode!r}")
    return mode


@contextmanager
def verification(mode: str) -> Iterator[None]:
    """Opens (``verify_files`` calls) inside use ``mode`` ("full" or "quick")."""
    token = _verify.set(check_verify(mode))
    try:
        yield
    finally:
        _verify.reset(token)


def verify_files(
    directory: str | os.PathLike[str], files: Any, mapped: Collection[str] = ()
) -> None:
    """Checks each listed file's size and SHA-256; raises CorruptFileError naming the bad one.

    Under ``verification("quick")`` the files named in ``mapped`` get the size check only."""
    directory = Path(directory)
    quick = _verify.get() == "quick"
    if not isinstance(files, dict):
        raise CorruptFileError(directory, "manifest 'files' is not a mapping")
    for name, entry in files.items():
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise CorruptFileError(directory, f"manifest names an invalid file {name!r}")
        path = directory / name
        if not path.is_file():
            raise CorruptFileError(path, "file listed in the manifest is missing")
        if not isinstance(entry, dict) or "size" not in entry or "sha256" not in entry:
            raise CorruptFileError(path, "manifest entry lacks size or sha256")
        size = path.stat().st_size
        if size != entry["size"]:
            raise CorruptFileError(
                path, f"size {size} bytes, manifest says {entry['size']} (truncated?)"
            )
        if quick and name in mapped:
            continue
        if sha256_file(path) != entry["sha256"]:
            raise CorruptFileError(path, "SHA-256 does not match the manifest (corrupted)")
