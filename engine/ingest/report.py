"""What an ingest run reports: the ``Report``, its malformed rows, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_REPORTED = 100  # malformed rows kept in a report (all are counted)


@dataclass(frozen=True)
class BadRow:
    where: str  # "row 17" or "row 17 (line 18)"
    id: str | None
    reason: str

    def __str__(self) -> str:
        ident = f" id {self.id!r}" if self.id is not None else ""
        return f"{self.where}{ident}: {self.reason}"


@dataclass
class Report:
    """What a run did: rows read, items written, rows skipped, time, size on disk."""

    collection: str
    input: str
    format: str
    total_rows: int | None = None  # rows in the input (estimated for CSV)
    resumed_from: int = 0  # input rows a previous run had already committed
    rows: int = 0  # input rows this run read
    added: int = 0  # items this run wrote
    skipped: int = 0  # malformed rows this run skipped
    errors: list[BadRow] = field(default_factory=list)  # the first MAX_REPORTED of them
    already_done: bool = False  # an earlier run had indexed this input completely
    seconds: float = 0.0
    count: int = 0  # items in the collection at the end
    bytes_on_disk: int = 0
    # Seconds each stage worked, and the encoding stage's waits: on the reader ("starved") and
    # on the writer ("blocked"); with overlap, the sum of stages exceeds ``seconds``.
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["errors"] = [str(b) for b in self.errors]
        d["docs_per_s"] = self.docs_per_s
        return d

    def summary(self) -> str:
        if self.already_done:
            return (
                f"{self.input} is already indexed in {self.collection!r} "
                f"({self.count:,} items); nothing to do"
            )
        resumed = f" (resumed at row {self.resumed_from:,})" if self.resumed_from else ""
        return (
            f"indexed {self.added:,} items from {self.rows:,} rows of {self.input}{resumed} into "
            f"{self.collection!r} in {self.seconds:.2f} s ({self.docs_per_s:,.0f} rows/s); "
            f"{self.skipped:,} malformed rows skipped; collection: {self.count:,} items, "
            f"{self.bytes_on_disk / 1e6:,.1f} MB on disk"
        )


class MalformedInputError(ValueError):
    """``on_error="fail"`` met malformed rows; nothing of the run was written."""

    def __init__(self, bad: list[BadRow], total: int) -> None:
        self.bad, self.total = bad, total
        shown = "; ".join(str(b) for b in bad[:10])
        more = f" (and {total - 10} more)" if total > 10 else ""
        super().__init__(
            f"{total} malformed row{'s' if total != 1 else ''}: {shown}{more}. Nothing was "
            "written; fix the input or pass on_error='skip' (--on-error skip) to index the rest"
        )


class IngestInterrupted(Exception):
    """Ctrl-C (KeyboardInterrupt): the chunks already written are committed whole."""

    def __init__(self, report: Report) -> None:
        self.report = report
        super().__init__(
            f"interrupted after {report.resumed_from + report.rows} input rows; "
            "run the same command again to continue from there"
        )
