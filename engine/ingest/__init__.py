"""``vecdex index``: from a file of any size to a searchable collection, resumably.

The input streams in chunks of ``batch_size`` rows (``engine.sources``). Three stages overlap, each
on its own thread: reading and checking a chunk, encoding its texts (the caller's thread), and
writing it to the collection. Each chunk is one write carrying the run's position in its input as
the collection's marker (``Collection.upsert(marker=...)``, one log record), so whatever survives a
crash is a whole number of chunks and the marker says exactly how many: running the same command
again continues from there, with no duplicates and no gaps. Because of that the writes skip the
per-write fsync (``durability="none"``: a killed process loses nothing, and after a power cut the
surviving log prefix still matches its marker); the final checkpoint makes the collection durable.

Malformed rows (no id, no text, a vector of the wrong length or with NaN/inf, an id seen before,
a line that is not JSON) are reported with their row numbers. ``on_error="fail"`` (the default)
checks the whole input before writing anything, so a bad row leaves nothing half-written;
``"skip"`` indexes the good rows and reports the rest.

Where each part lives: ``run`` (``ingest()``, the entry point), ``plan`` (columns, fit with an
existing collection, resuming), ``rows`` (checking a chunk's rows), ``vectors`` (reading a vector
column), ``pipeline`` (the threaded stages) and ``report`` (the ``Report`` and the errors).
"""

from __future__ import annotations

from .report import IngestInterrupted as IngestInterrupted
from .report import MalformedInputError as MalformedInputError
from .report import Report as Report
from .run import TEXT_BATCH as TEXT_BATCH
from .run import ingest as ingest

__all__ = ["TEXT_BATCH", "IngestInterrupted", "MalformedInputError", "Report", "ingest"]
