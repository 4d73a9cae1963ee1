"""Hybrid benchmark, report: the machine it ran on, the console table and the sweep plot of a
bench/hybrid.py report. Used by bench/hybrid.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine_info as common_machine_info
from bench.hybrid_quality import RRF_WEIGHTS, SCORE_FUSIONS, Setting
from engine import fusion as fz

ROOT = Path(__file__).parent.parent


VERSIONS = (
    "bm25s",
    "PyStemmer",
    "lancedb",
    "pylance",
    "pyarrow",
    "sentence-transformers",
    "pytrec-eval-terrier",
)


def machine_info() -> dict[str, Any]:
    """``bench.common.machine_info`` with the hybrid benchmark's libraries."""
    return common_machine_info(VERSIONS)


# ---- the console table ---------------------------------------------------------------------------
W = 90  # width of the name column


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _row(what: str, m: dict[str, Any], train: dict[str, Any] | None = None) -> str:
    line = f"{what[:W]:<{W}} {m['ndcg@10']:>8.4f} {_f(m.get('recall@100')):>7}"
    return line + (f"   (train {train['ndcg@10']:.4f})" if train else "")


def table(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, ds in report["datasets"].items():
        lines += _quality_lines(name, ds)
        for label, sw in ds["sweeps"].items():
            lines.append(f"\nFusion sweep ({label}), nDCG@10 train / test:")
            for s in sw["settings"]:
                st = Setting(s["method"], s["weight"], s["rrf_k"], s["depth"])
                lines.append(
                    f"  {st.label():<40} {s['train']['ndcg@10']:.4f} / {s['test']['ndcg@10']:.4f}"
                )
            f = sw["fitted"]
            lines.append(
                f"  best on train: {f['label']}: train {f['train']['ndcg@10']:.4f}, "
                f"test {f['test']['ndcg@10']:.4f}"
            )
            o = f["test_oracle_not_an_estimate"]
            lines.append(
                f"  (best on test, an upper bound only: {o['label']}: {o['test']['ndcg@10']:.4f})"
            )
        lines += _latency_lines(ds)
        lines += _lexical_speed_lines(ds)
        lines.append("\nTargets:")
        for t in ds["targets"]:
            verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
            model = f" [{t['model']}]" if t.get("model") else ""
            lines.append(f"  [{verdict}] {t['target']}{model}: {t['value']}")
        for s in ds["skipped"]:
            lines.append(f"  skipped {s['name']}: {s['reason']}")
    return "\n".join(lines)


def _quality_lines(name: str, ds: dict[str, Any]) -> list[str]:
    lines = [
        f"\n## {name} ({ds['data']['docs']} docs, {ds['data']['test_queries']} test "
        f"queries, {ds['data']['subset']}): test split\n",
        f"{'system / mode':<{W}} {'nDCG@10':>8} {'R@100':>7}",
        "-" * (W + 17),
    ]
    for r in ds["quality_test"]:
        what = f"{r['system']} {r['mode']} {r['model']}"
        if "fusion" in r:
            what += f" {r['fusion']}"
        lines.append(_row(what, r))
    for label, sw in ds["sweeps"].items():
        f = sw["fitted"]
        lines.append(_row(f"vecdex hybrid {label} fitted on train: {f['label']}", f["test"]))
        for m, b in f["best_per_fusion"].items():
            lines.append(_row(f"  best {m} on train: {b['label']}", b["test"], b["train"]))
    if "best_pipeline" in ds:
        b = ds["best_pipeline"]
        what = f"best vecdex pipeline on train: {b['model']} {b['label']}"
        lines.append(_row(what, b["test"], b["train"]))
    if "lancedb" in ds:
        for mode, r in ds["lancedb"]["modes"].items():
            lines.append(
                f"{'lancedb ' + mode + ' (limit 10)':<{W}} {r['limit_10']['ndcg@10']:>8.4f}"
            )
            lines.append(_row(f"lancedb {mode} (limit 100)", r["limit_100"]))
    lines.append("\nLibrary default fusion against the better of its two parts (test nDCG@10):")
    for model, c in ds["default_vs_parts"].items():
        lines.append(
            f"  {model:<34} dense {c['dense']:.4f}  lexical {c['lexical']:.4f}  "
            f"default hybrid {c['default_hybrid']:.4f}  ({c['margin']:+.4f})"
        )
    return lines


def _latency_lines(ds: dict[str, Any]) -> list[str]:
    lat = ds["latency"]
    fu = lat["fusion"]
    lines = [
        f"\nLatency, k={lat['k']}, one query at a time ({lat['repeats']} passes x "
        f"{lat['queries']} queries); vecdex hybrid at the library default "
        f"{fu['method']}(w={fu['weight']:g}, depth={fu['depth']}):",
        f"  {'system':<20} {'median ms':>10} {'p95 ms':>10}",
    ]
    for name, r in lat["systems"].items():
        lines.append(f"  {name:<20} {r['median_ms']:>10.3f} {r['p95_ms']:>10.3f}")
    if "lancedb" in ds:
        lines.append(
            f"  vecdex hybrid is {ds['lancedb']['speedup_vecdex_hybrid_vs_lancedb_hybrid']}x "
            "faster than LanceDB hybrid (medians)"
        )
    return lines


def _lexical_speed_lines(ds: dict[str, Any]) -> list[str]:
    if "lexical_speed" not in ds:
        return []
    ls = ds["lexical_speed"]
    i, q, r = ls["indexing_docs_per_s"], ls["qps"], ls["ratios"]
    return [
        f"\nLexical speed (median of {ls['repeats']}): docs/s raw bm25s "
        f"{i['raw_bm25s']:.0f}, vecdex BM25Index {i['vecdex_BM25Index_add_rebuild']:.0f} "
        f"({r['indexing_index']}x), collection add+flush "
        f"{i['vecdex_collection_add_flush']:.0f} ({r['indexing_collection']}x)",
        f"  queries/s one at a time: raw {q['raw_bm25s_one_at_a_time']:.0f}, "
        f"vecdex col.search {q['vecdex_col_search_one_at_a_time']:.0f} "
        f"({r['qps_one_at_a_time']}x), BM25Index.search "
        f"{q['vecdex_BM25Index_search_one_at_a_time']:.0f} "
        f"({r['qps_index_one_at_a_time']}x)",
        f"  queries/s batched: raw {q['raw_bm25s_batched']:.0f}, vecdex "
        f"{q['vecdex_col_search_batch']:.0f} ({r['qps_batched']}x); top-10 "
        f"sets equal to raw bm25s for {ls['top10_same_set_as_raw']:.1%} of queries",
    ]


# ---- the plot ------------------------------------------------------------------------------------
def plot(report: dict[str, Any], path: Path) -> None:
    """Per dataset and swept model: weighted and dbsf over the dense weight (left), RRF over
    rrf_k per weight (right); depth 100, train solid, test dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (ds_name, label, sw)
        for ds_name, ds in report["datasets"].items()
        for label, sw in ds["sweeps"].items()
    ]
    fig, axes = plt.subplots(len(panels), 2, figsize=(12, 4.5 * len(panels)), squeeze=False)
    for row, (ds_name, label, sw) in enumerate(panels):
        settings = [s for s in sw["settings"] if s["depth"] == fz.DEFAULT_DEPTH]
        ax = axes[row][0]
        for method, color in zip(SCORE_FUSIONS, ("tab:blue", "tab:orange"), strict=True):
            pts = [s for s in settings if s["method"] == method]
            for split, style in (("train", "-o"), ("test", "--s")):
                ax.plot(
                    [s["weight"] for s in pts],
                    [s[split]["ndcg@10"] for s in pts],
                    style,
                    color=color,
                    alpha=1.0 if split == "train" else 0.7,
                    label=f"{method} {split}",
                )
        ax.axvline(fz.DEFAULT_WEIGHT, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("dense weight (weighted: min-max; dbsf: mean +- 3 sd normalised)")
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"{ds_name} / {label}: weighted and dbsf")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes[row][1]
        r = [s for s in settings if s["method"] == "rrf"]
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(RRF_WEIGHTS)))
        for c, wt in zip(colors, RRF_WEIGHTS, strict=True):
            pts = sorted((s for s in r if s["weight"] == wt), key=lambda s: s["rrf_k"])
            ks = [s["rrf_k"] for s in pts]
            ax.plot(ks, [s["train"]["ndcg@10"] for s in pts], "-o", color=c, label=f"w={wt} train")
            ax.plot(
                ks,
                [s["test"]["ndcg@10"] for s in pts],
                "--",
                color=c,
                alpha=0.6,
                label=f"w={wt} test",
            )
        ax.set_xscale("log")
        ax.set_xlabel("rrf_k (log)")
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"{ds_name} / {label}: RRF (solid train, dashed test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Fusion sweep, depth 100: chosen on train; test shown for flatness only")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
