"""External ids <-> labels in flat arrays: about 33 bytes an id plus its UTF-8 bytes.

A dict of Python strings costs ~100 bytes an id before the string itself (the str object, the
int, the hash-table slot); at tens of millions of ids that is gigabytes of bookkeeping beside
vectors that live on disk. ``IdMap`` keeps instead:
- every label's id as UTF-8 bytes in one buffer with int64 offsets by label (labels are handed
  out in increasing order, so appending keeps the buffer in label order);
- a live flag by label;
- for lookups, the ids' 64-bit hashes sorted, with their labels beside (a "base" built at open
  and merged now and then), plus a small dict for the ids written since the last merge.
A lookup hashes the id, binary-searches the base and confirms the match against the stored
bytes, so a hash collision can only cost a comparison. The hash is Python's own ``hash(str)``:
it never leaves the process (nothing hashed is written), so its per-process seed is harmless.

No library offers this (pyarrow has no persistent hash index over a string array, numpy no
string hash): the code is small and tested against a dict model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from index import memory
from index.ragged import ragged_arange

_MIN_CAPACITY = 1024
# The recent dict is merged into the sorted base once it passes this size or a sixteenth of the
# base: a merge sorts the base again (numpy), a few microseconds per id written in all.
_MIN_RECENT = 4096
_HASH_CHUNK = 65536  # ids turned into Python strings at once when a checkpoint is installed
_BULK_LOOKUP = 64  # ``labels`` of at least this many keys searches the base vectorised
_BULK_IDS = 48  # labels beyond which Arrow decodes ids (it wins from ~40 on)


class IdMap:
    """Live ids and their labels; a label is never reused (a new label per version of an id)."""

    def __init__(self) -> None:
        self._buf = np.empty(0, dtype=np.uint8)  # UTF-8 ids, in label order
        self._off = np.zeros(1, dtype=np.int64)  # label L's id: _buf[_off[L]:_off[L + 1]]
        self._alive = np.empty(0, dtype=bool)
        self._labels_end = 0  # labels [0, _labels_end) have offsets
        self._hashes = np.empty(0, dtype=np.int64)  # the base, sorted
        self._hash_labels = np.empty(0, dtype=np.int64)
        self._recent: dict[str, int] = {}  # ids written since the base was built
        self._count = 0
        self._dead_bytes = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.label(key) is not None

    # ---- lookups -----------------------------------------------------------------------------
    def label(self, key: str) -> int | None:
        """The live label of ``key``, or None."""
        lab = self._recent.get(key)
        if lab is not None:
            return lab
        h = hash(key)
        lo = int(np.searchsorted(self._hashes, h, side="left"))
        raw = key.encode("utf-8", "surrogatepass")  # a lone surrogate matches no stored id
        while lo < self._hashes.size and self._hashes[lo] == h:
            lab = int(self._hash_labels[lo])
            if self._alive[lab] and self._bytes(lab) == raw:
                return lab
            lo += 1
        return None

    def labels(self, keys: Sequence[str]) -> list[int]:
        """The live labels of those of ``keys`` present, in order."""
        found: Iterable[int | None]
        if len(keys) < _BULK_LOOKUP:
            found = map(self.label, keys)
        else:
            # Many keys (a replayed batch, mostly new ids): hash them and search the base at
            # once; only keys whose hash is there take the one-key path.
            hashes = np.fromiter(map(hash, keys), np.int64, len(keys))
            base = self._hashes
            at = np.minimum(np.searchsorted(base, hashes), max(base.size - 1, 0))
            maybe = (base[at] == hashes).tolist() if base.size else [False] * len(keys)
            get = self._recent.get
            found = (
                lab if (lab := get(k)) is not None else self.label(k) if m else None
                for k, m in zip(keys, maybe, strict=True)
            )
        return [lab for lab in found if lab is not None]

    def _bytes(self, label: int) -> bytes:
        return self._buf[self._off[label] : self._off[label + 1]].tobytes()

    def id(self, label: int) -> str:
        """The id stored under ``label`` (live, or dead since the last compaction)."""
        return self._bytes(label).decode()

    def ids(self, labels: np.ndarray | list[int]) -> list[str]:
        """The ids of ``labels`` (live ones), in order."""
        if isinstance(labels, np.ndarray):
            if labels.size > _BULK_IDS:
                return self.id_array(labels).tolist()
            labels = labels.tolist()
        # Memoryviews give Python ints and byte slices without a numpy scalar or array per id
        # (a search's k ids in ~2 us instead of ~8).
        off, buf = self._off.data, self._buf.data
        return [str(buf[off[x] : off[x + 1]], "utf-8") for x in labels]

    def id_array(self, labels: np.ndarray) -> np.ndarray:
        """The ids of ``labels`` as an object array of ``labels``' shape (a batch search's
        m x k). Small arrays take ``ids``' per-id path; larger ones let Arrow gather and decode:
        the buffer and offsets are an Arrow large-string array as they stand (no copy), and
        its ``take`` and conversion to Python strings run in C++, about 25 ns an id against
        ~130 ns for any per-id path in Python (400k ids, 20,000 taken)."""
        flat = labels.reshape(-1)
        if flat.size <= _BULK_IDS:
            out = np.empty(flat.shape[0], dtype=object)
            out[:] = self.ids(flat.tolist())
            return out.reshape(labels.shape)
        end = self._labels_end
        arr = pa.LargeStringArray.from_buffers(
            end, pa.py_buffer(self._off[: end + 1]), pa.py_buffer(self._buf)
        )
        return arr.take(flat).to_numpy(zero_copy_only=False).reshape(labels.shape)

    def __iter__(self) -> Iterator[str]:
        """The live ids, in label order."""
        return iter(self.ids(np.flatnonzero(self._alive[: self._labels_end])))

    # ---- changes -----------------------------------------------------------------------------
    def assign(self, keys: Sequence[str], labels: np.ndarray) -> None:
        """Gives new ``labels`` (increasing, from ``next_label`` on) to ``keys``, whose old labels
        (if any) the caller removed first."""
        start = int(labels[0]) if labels.size else self._labels_end
        if labels.size and (
            start < self._labels_end or (labels.size > 1 and not np.all(np.diff(labels) == 1))
        ):
            raise ValueError("labels must be new and consecutive")
        raw = [k.encode() for k in keys]
        lens = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
        end = start + len(raw)
        self._grow_labels(end)
        # Labels skipped (none in practice: a collection hands them out in order) hold no id.
        self._off[self._labels_end + 1 : start + 1] = self._off[self._labels_end]
        base = int(self._off[start])
        self._off[start + 1 : end + 1] = base + np.cumsum(lens)
        total = int(self._off[end])
        if total > self._buf.shape[0]:
            grown = np.empty(max(total, 2 * self._buf.shape[0], _MIN_CAPACITY), dtype=np.uint8)
            grown[:base] = self._buf[:base]
            self._buf = grown
        self._buf[base:total] = np.frombuffer(b"".join(raw), dtype=np.uint8)
        self._alive[self._labels_end : start] = False
        self._alive[start:end] = True
        self._labels_end = end
        self._recent.update(zip(keys, labels.tolist(), strict=True))
        self._count += len(raw)
        if len(self._recent) > max(_MIN_RECENT, self._hashes.size // 16):
            self._merge()

    def remove(self, labels: np.ndarray) -> None:
        """Marks live ``labels`` dead (their ids no longer resolve)."""
        for lab in labels.tolist():
            if not self._alive[lab]:
                continue
            self._alive[lab] = False
            self._count -= 1
            self._dead_bytes += int(self._off[lab + 1] - self._off[lab])
            key = self.id(lab)
            if self._recent.get(key) == lab:
                del self._recent[key]

    def install(self, ids: pa.Array | Sequence[str], labels: np.ndarray, next_label: int) -> None:
        """Takes a checkpoint's live ``ids`` (an Arrow string array, or strings) under
        ``labels`` (unique, < ``next_label``). An Arrow array's bytes are taken as they are, and
        its ids hashed a chunk at a time, so no Python string per id outlives its chunk."""
        arr = ids if isinstance(ids, pa.Array) else pa.array(list(ids), pa.string())
        arr = arr.cast(pa.large_string())
        labels = np.asarray(labels, dtype=np.int64)
        n = len(arr)
        off = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + n + 1]
        data = np.frombuffer(arr.buffers()[2], np.uint8) if n else np.empty(0, np.uint8)
        lens = np.diff(off)
        if n > 1 and not np.all(labels[1:] > labels[:-1]):
            order = np.argsort(labels, kind="stable")
            self._buf = data[ragged_arange(off[:-1][order], lens[order])]
            labels, lens = labels[order], lens[order]
        else:
            order = None
            self._buf = data[off[0] : off[-1]].copy()
        by_label = np.zeros(next_label, dtype=np.int64)
        by_label[labels] = lens
        self._off = np.zeros(next_label + 1, dtype=np.int64)
        np.cumsum(by_label, out=self._off[1:])
        self._alive = np.zeros(next_label, dtype=bool)
        self._alive[labels] = True
        self._labels_end = next_label
        self._count = n
        self._dead_bytes = 0
        self._recent = {}
        hashes = np.empty(n, dtype=np.int64)
        for a in range(0, n, _HASH_CHUNK):
            chunk = arr.slice(a, _HASH_CHUNK).to_pylist()
            hashes[a : a + len(chunk)] = np.fromiter(map(hash, chunk), np.int64, len(chunk))
        self._set_base(hashes if order is None else hashes[order], labels)
        self._check_unique()

    def _check_unique(self) -> None:
        """Raises ValueError naming an id held under two labels (equal hashes, equal bytes)."""
        same = np.flatnonzero(self._hashes[1:] == self._hashes[:-1])
        for i in same.tolist():
            a, b = self._hash_labels[i : i + 2].tolist()
            if self._bytes(a) == self._bytes(b):
                raise ValueError(f"id {self.id(a)!r} is held twice (labels {a} and {b})")

    def compact(self) -> None:
        """Merges the recent ids into the base and drops dead ids' bytes and hashes (called at
        checkpoints; cheap when little changed)."""
        if self._recent or self._hashes.size > self._count:
            self._merge()
        if self._dead_bytes <= max(_MIN_CAPACITY, int(self._off[self._labels_end]) // 4):
            return
        live = np.flatnonzero(self._alive[: self._labels_end])
        starts, ends = self._off[live], self._off[live + 1]
        lens = np.zeros(self._labels_end, dtype=np.int64)
        lens[live] = ends - starts
        self._buf = self._buf[ragged_arange(starts, ends - starts)]
        self._off = np.zeros(self._labels_end + 1, dtype=np.int64)
        np.cumsum(lens, out=self._off[1:])
        self._dead_bytes = 0

    # ---- internals ---------------------------------------------------------------------------
    def _grow_labels(self, end: int) -> None:
        if end + 1 > self._off.shape[0]:
            cap = max(end + 1, 2 * self._off.shape[0], _MIN_CAPACITY)
            off = np.empty(cap, dtype=np.int64)
            off[: self._labels_end + 1] = self._off[: self._labels_end + 1]
            alive = np.zeros(cap - 1, dtype=bool)
            alive[: self._labels_end] = self._alive[: self._labels_end]
            self._off, self._alive = off, alive

    def _merge(self) -> None:
        """Moves the recent ids into the sorted base (dropping dead base entries)."""
        keep = self._alive[self._hash_labels]
        recent_labels = np.fromiter(self._recent.values(), np.int64, len(self._recent))
        recent_hashes = np.fromiter(map(hash, self._recent), np.int64, len(self._recent))
        self._recent = {}
        self._set_base(
            np.concatenate([self._hashes[keep], recent_hashes]),
            np.concatenate([self._hash_labels[keep], recent_labels]),
        )

    def _set_base(self, hashes: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(hashes, kind="stable")
        self._hashes, self._hash_labels = hashes[order], labels[order]

    def ram_bytes(self) -> int:
        """Bytes held: the buffers, offsets, flags, the sorted hashes and the recent dict."""
        end = self._labels_end
        used = int(self._off[end]) + 8 * (end + 1) + end
        return used + 16 * self._hashes.size + memory.str_key_ram(self._recent)
