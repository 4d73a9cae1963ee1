"""recall@k of an approximate search against the exact answer (the ``flat`` oracle, or exhaustive
Chamfer for token sets): the one definition that tests, benchmarks and the demo use.

Not ``engine.metrics.recall_at_k``: that one scores a ranking against relevance judgements
(qrels); this one scores neighbours against the true nearest neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def _is_pad(x: Any) -> bool:
    return x is None or (
        isinstance(x, (int, np.integer)) and not isinstance(x, bool) and bool(x < 0)
    )


def recall_at_k(
    found: Iterable[Sequence[Any]], truth: Iterable[Sequence[Any]], k: int | None = None
) -> float:
    """The fraction of the true top-k neighbours that are among the first k results, pooled
    over the queries.

    Args:
        found: one row per query, best first: labels (an (m, k) int array, -1 padded, as every
            index returns them) or ids (e.g. ``SearchResult.ids``, None padded).
        truth: the exact top-k per query, in the same terms. Padding (a query with fewer than k
            true neighbours, e.g. a selective filter) is not counted.
        k: the cut-off applied to both; None: the width of each ``truth`` row.

    Returns:
        hits / true neighbours over all queries, in [0, 1]; 1.0 when ``truth`` holds none.

    Raises:
        ValueError: ``found`` and ``truth`` have different numbers of rows, or ``k`` < 1.

    Example:
        >>> recall_at_k(np.array([[3, 1, -1]]), np.array([[1, 2, 3]]))
        0.6666666666666666
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    rows_f, rows_t = list(found), list(truth)
    if len(rows_f) != len(rows_t):
        raise ValueError(f"found has {len(rows_f)} rows, truth {len(rows_t)}")
    hits = total = 0
    for f, t in zip(rows_f, rows_t, strict=True):
        f_list = f.tolist() if isinstance(f, np.ndarray) else list(f)
        t_list = t.tolist() if isinstance(t, np.ndarray) else list(t)
        want = {x for x in (t_list if k is None else t_list[:k]) if not _is_pad(x)}
        cut = len(t_list) if k is None else k
        total += len(want)
        hits += len(want.intersection(x for x in f_list[:cut] if not _is_pad(x)))
    return hits / total if total else 1.0
