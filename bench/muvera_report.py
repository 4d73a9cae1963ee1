"""MUVERA benchmark, report: the targets met or missed, the README table and the plots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .common import dist_version, machine_info
from .muvera_data import MAIN, TARGETS

VERSIONS = (
    "faiss-cpu",
    "hnswlib",
    "pyarrow",
    "threadpoolctl",
    "transformers",
    "sentence-transformers",
    "matplotlib",
)


def machine() -> dict[str, Any]:
    try:
        return machine_info(VERSIONS)
    except Exception as e:  # pragma: no cover - informative only
        return {"error": repr(e), "versions": {d: dist_version(d) for d in VERSIONS}}


def _target(name: str, goal: str, measured: Any, met: bool | None, gap: str) -> dict[str, Any]:
    return {"target": name, "goal": goal, "measured": measured, "met": met, "gap": gap}


def _ratio_target(name: str, rt: Any, detail: Any) -> dict[str, Any]:
    if rt is None:
        return _target(name, ">= 2x", detail, None, "recall not reached by the heuristic")
    if isinstance(rt, str):  # "<x": MUVERA did not reach the recall within cmax candidates
        return _target(name, ">= 2x", detail, False, f"{rt}x (MUVERA needs > cmax candidates)")
    return _target(name, ">= 2x", detail, rt >= 2.0, f"{rt:.2f}x vs 2x ({rt - 2:+.2f})")


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for variant, r in res.get("scifact", {}).items():
        e2e = r["muvera_end_to_end"]
        diffs = {c: v["ndcg@10_minus_exhaustive"] for c, v in e2e["by_candidates"].items()}
        best = e2e["fewest_candidates_ndcg_within_0.005"]
        no_loss = [int(c) for c, d in diffs.items() if d >= -0.005]
        gap = ", ".join(f"{c}: {d:+.4f}" for c, d in diffs.items())
        out.append(
            _target(
                f"SciFact/{variant}: MUVERA{MAIN.name} nDCG@10 within 0.005 of exhaustive MaxSim "
                f"({r['exhaustive']['metrics']['ndcg@10']:.4f})",
                "|diff| <= 0.005 (one-sided: diff >= -0.005)",
                {
                    "diff_by_candidates": diffs,
                    "fewest_candidates_no_loss": min(no_loss, default=None),
                },
                best is not None,
                (f"|diff| <= 0.005 from {best} cand.; " if best else "two-sided: never; ")
                + f"no loss (>= -0.005) from {min(no_loss, default=None)} cand.; diffs {gap}",
            )
        )
        for t in TARGETS:
            rt = r["candidate_ratio_heuristic_over_muvera"][MAIN.name][str(t)]
            h = r["heuristic"]["candidates_for_recall"].get(str(t))
            m = r["muvera_same_queries"]["candidates_for_recall"].get(str(t))
            out.append(
                _ratio_target(
                    f"SciFact/{variant}: candidates heuristic/MUVERA{MAIN.name} at recall {t}",
                    rt,
                    {"ratio": rt, "heuristic": h and round(h["interp"], 1), "muvera": m},
                )
            )
    syn = res.get("synthetic")
    if syn:
        sp = syn.get("speedup_vs_exhaustive_at_recall_0.95", {})
        for key, v in sp.items():
            out.append(
                _target(
                    f"synthetic {syn['data']['n_docs']:,} docs: MUVERA faster than exhaustive at "
                    f"recall@10 >= 0.95 ({key.replace('_', ' ')})",
                    ">= 10x",
                    v,
                    v["speedup"] >= 10,
                    f"{v['speedup']}x vs 10x",
                )
            )
        if not sp:
            out.append(
                _target("synthetic: recall@10 >= 0.95 reachable", "yes", None, False, "never")
            )
        mv = syn["muvera"]
        exact_p = max(int(x) for x in mv["by_nprobe"])
        best_p = (mv.get("fastest_at_recall_0.95") or {}).get("nprobe")
        keep = {f"{mv['config']} nprobe{exact_p}": "exact FDE search"}
        if best_p is not None:
            key = f"{mv['config']} nprobe{best_p}"
            keep[key] = keep.get(key, "") + (" = " if key in keep else "") + "IVF operating point"
        for name in syn["candidate_ratio_heuristic_over_muvera"]:
            if name.endswith(" flat"):
                keep[name] = "exact FDE search"
        for name, why in keep.items():
            rr = syn["candidate_ratio_heuristic_over_muvera"].get(name)
            if rr is None:
                continue
            for t in TARGETS:
                out.append(
                    _ratio_target(
                        f"synthetic: candidates heuristic/MUVERA {name} ({why}) at recall {t}",
                        rr[str(t)],
                        rr[str(t)],
                    )
                )
    return out


def _interp(need: dict[str, Any], t: float) -> int | None:
    v = need.get(str(t))
    return round(v["interp"]) if v else None


def _curve_row(head: Any, curve: dict[str, Any]) -> str:
    """A table row: recall@10 at 20..500 candidates, then the candidates for 0.90 and 0.95."""
    rc, need = curve["recall_at_candidates"], curve["candidates_for_recall"]
    cells = " | ".join(f"{rc.get(str(c), np.nan):.3f}" for c in (20, 50, 100, 200, 500))
    return f"| {head} | {cells} | {need['0.9']} | {need['0.95']} |"


def _sweep_table(title: str, sweep: dict[str, Any]) -> list[str]:
    head = " | ".join(str(c) for c in (20, 50, 100, 200, 500))
    return [
        f"| {title} | {head} | cand. for 0.90 | cand. for 0.95 |",
        "|---" * 8 + "|",
        *(_curve_row(f"MUVERA {name} ({s['fde_dims']} dims)", s) for name, s in sweep.items()),
    ]


def markdown(res: dict[str, Any]) -> str:
    lines = []
    for variant, r in res.get("scifact", {}).items():
        lines.append(
            f"**SciFact test ({r['queries']} queries, {r['documents']:,} docs, "
            f"{r['document_tokens']:,} tokens), token encoder `{variant}` "
            f"({'untrained' if not r['encoder']['trained'] else 'trained'})**\n"
        )
        lines.append(
            "| method | candidates | recall@10 vs exhaustive | nDCG@10 | recall@100 | "
            "ms/query (batch) |"
        )
        lines.append("|---|---|---|---|---|---|")
        ex = r["exhaustive"]
        lines.append(
            f"| exhaustive Chamfer | all | 1.000 | {ex['metrics']['ndcg@10']:.4f} | "
            f"{ex['metrics']['recall@100']:.4f} | {ex['batch_ms_per_query']:.0f} |"
        )
        for c, v in r["muvera_end_to_end"]["by_candidates"].items():
            r100 = f"{v['metrics']['recall@100']:.4f}" if v["k"] >= 100 else "-"
            lines.append(
                f"| MUVERA {MAIN.name}, exact FDE search | {c} | "
                f"{v['recall@10_vs_exhaustive']:.3f} | {v['metrics']['ndcg@10']:.4f} | {r100} | "
                f"{v['batch_ms_per_query']:.1f} |"
            )
        lines.append("")
        lines += _sweep_table("recall@10 vs exhaustive at candidates", r["sweep"])
        h = r["heuristic"]
        pts = "; ".join(
            f"k'={k}: {v['candidates']:.0f} -> {v['recall']:.3f}"
            for k, v in h["by_k_tokens"].items()
        )
        hn = h["candidates_for_recall"]
        lines.append(
            f"\nHeuristic (exact token search, {h['queries']} queries): {pts}. Candidates for "
            f"0.90 / 0.95: {hn['0.9'] and round(hn['0.9']['interp'])} / "
            f"{hn['0.95'] and round(hn['0.95']['interp'])}; ratio heuristic/MUVERA{MAIN.name} "
            f"(same queries): {r['candidate_ratio_heuristic_over_muvera'][MAIN.name]}.\n"
        )
        ab = r.get("query_augment_ablation")
        if ab:
            need = ab["muvera"]["candidates_for_recall"]
            hneed = ab["heuristic_candidates_for_recall"]
            lines.append(
                f"Without the [MASK] query padding ({ab['queries']} queries, "
                f"{ab['mean_real_query_tokens']} real tokens instead of {ab['padded_query_tokens']}"
                f"): MUVERA{MAIN.name} needs {need['0.9']} / {need['0.95']} candidates for "
                f"recall 0.90 / 0.95, the heuristic {_interp(hneed, 0.9)} / {_interp(hneed, 0.95)}"
                f" (ratio {ab['ratio_heuristic_over_muvera']}); exhaustive nDCG@10 on these "
                f"queries {ab['no_mask_exhaustive']['ndcg@10']} without vs "
                f"{ab['full_queries_exhaustive']['ndcg@10']} with the padding.\n"
            )
        lat = r["latency"]
        lines.append("| latency per query (median ms) | " + " | ".join(lat) + " |")
        lines.append("|---" * (len(lat) + 1) + "|")
        for meth in next(iter(lat.values())):
            lines.append(
                f"| {meth} | " + " | ".join(f"{lat[t][meth]['median_ms']:.1f}" for t in lat) + " |"
            )
        lines.append("")
    syn = res.get("synthetic")
    if syn:
        d = syn["data"]
        mv = syn["muvera"]
        lines.append(
            f"**Synthetic: {d['n_docs']:,} docs x {d['doc_tokens'][0]}-{d['doc_tokens'][1]} "
            f"tokens ({d['document_tokens']:,} tokens, {d['dim']}-d), {d['n_queries']} queries; "
            f"MUVERA {mv['config']} ({mv['fde_dims']} dims) in {mv['inner']}**\n"
        )
        lines.append(
            "| nprobe | "
            + " | ".join(f"recall@{c} cand." for c in (20, 50, 100, 200, 500))
            + " | cand. for 0.90 | cand. for 0.95 | FDE search ms/q |"
        )
        lines.append("|---" * 9 + "|")
        for p, c in mv["by_nprobe"].items():
            lines.append(_curve_row(p, c) + f" {c['fde_search_ms_per_query_batch']} |")
        if syn.get("sweep"):
            lines.append("")
            lines += _sweep_table("exact FDE search, recall@10 at candidates", syn["sweep"])
        lines.append(
            "\n| latency per query, recall@10 >= 0.95 | exhaustive ms | MUVERA ms | speedup |"
        )
        lines.append("|---|---|---|---|")
        for key, v in syn["speedup_vs_exhaustive_at_recall_0.95"].items():
            if "exhaustive_ms" in v:
                lines.append(
                    f"| one query per call, {key.replace('_', ' ')} | {v['exhaustive_ms']:.0f} | "
                    f"{v['muvera_ms']:.1f} | {v['speedup']}x |"
                )
            else:
                lines.append(
                    f"| batch, {key.replace('_', ' ')} | {v['exhaustive_ms_per_query']:.0f} | "
                    f"{v['muvera_ms_per_query']:.1f} | {v['speedup']}x |"
                )
        h = syn["heuristic"]
        hn = h["candidates_for_recall"]
        lines.append(
            f"\nHeuristic (exact token search, {h['queries']} queries): candidates for 0.90 / 0.95 "
            f"{_interp(hn, 0.9)} / {_interp(hn, 0.95)}; "
            f"ratio heuristic/MUVERA: {syn['candidate_ratio_heuristic_over_muvera']}; latency "
            + ", ".join(f"{t}: {v['median_ms']:.0f} ms" for t, v in h["latency"].items())
        )
        lines.append(
            f"\nBytes per document: {syn['bytes_per_doc']}; PQ: {syn['pq']['spec']}, "
            f"recall {{nprobe: curve}} = "
            + str({p: c["recall_at_candidates"] for p, c in syn["pq"]["by_nprobe"].items()})
        )
    thr = res.get("throughput")
    if thr:
        lines.append(
            "\n| FDE generation | dims | bytes/doc (float32) | docs/s 1 thread | docs/s all cores |"
        )
        lines.append("|---|---|---|---|---|")
        for name, row in thr["by_config"].items():
            keys = [k for k in row if k.startswith("docs_per_s")]
            lines.append(
                f"| {name} | {row['fde_dims']} | {row['bytes_per_doc_float32']} | "
                + " | ".join(str(row[k]) for k in keys)
                + " |"
            )
    lines.append("\n| target | goal | met | gap |")
    lines.append("|---|---|---|---|")
    for t in res.get("targets", []):
        met = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {t['goal']} | {met} | {t['gap']} |")
    return "\n".join(lines)


def plot(res: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"SciFact ({v})", r, "scifact") for v, r in res.get("scifact", {}).items()]
    if res.get("synthetic"):
        panels.append(
            (f"synthetic {res['synthetic']['data']['n_docs']:,} docs", res["synthetic"], "syn")
        )
    if not panels:
        return []
    written = []
    # recall@10 vs candidates
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, (title, r, kind) in zip(axes[0], panels, strict=True):
        if kind == "scifact":
            curves = {f"MUVERA {n} ({s['fde_dims']}d)": s["dense"] for n, s in r["sweep"].items()}
        else:
            nprobes = list(r["muvera"]["by_nprobe"])
            shown = {nprobes[0], nprobes[len(nprobes) // 2], nprobes[-1]}
            curves = {
                f"MUVERA {r['muvera']['config']} ivf nprobe={p}": c["dense"]
                for p, c in r["muvera"]["by_nprobe"].items()
                if p in shown
            }
            curves.update(
                {
                    f"MUVERA {n} ({c['fde_dims']}d) exact FDE": c["dense"]
                    for n, c in r.get("sweep", {}).items()
                    if c.get("inner") == "flat"
                }
            )
            curves.update(
                {f"MUVERA + IVF-PQ nprobe={p}": c["dense"] for p, c in r["pq"]["by_nprobe"].items()}
            )
        for label, dense in curves.items():
            ax.plot(np.arange(1, len(dense) + 1), dense, label=label, lw=1.5)
        h = r["heuristic"]
        ax.plot(
            h["dense_candidates"],
            h["dense_recall"],
            "k--o",
            ms=2.5,
            lw=1.5,
            label=f"heuristic (exact token ANN, {h['queries']} q)",
        )
        for t in TARGETS:
            ax.axhline(t, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlim(5, None)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("candidates reranked (heuristic: mean union size)")
        ax.set_ylabel("recall@10 vs exhaustive Chamfer")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = out.with_name(out.stem + "_recall_candidates.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(str(path))
    # recall@10 vs latency
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, (title, r, kind) in zip(axes[0], panels, strict=True):
        if kind == "scifact":
            e2e = r["muvera_end_to_end"]["by_candidates"]
            xs = [v["batch_ms_per_query"] for v in e2e.values()]
            ys = [v["recall@10_vs_exhaustive"] for v in e2e.values()]
            ax.plot(xs, ys, "-o", label=f"MUVERA {MAIN.name} (batch, per query)")
            for c, x, y in zip(e2e, xs, ys, strict=True):
                ax.annotate(c, (x, y), fontsize=7)
            ax.plot(
                [r["exhaustive"]["batch_ms_per_query"]], [1.0], "ks", label="exhaustive (batch)"
            )
            single = r["latency"]
        else:
            pts = sorted(
                r["muvera"]["operating_points"], key=lambda p: (p["nprobe"], p["candidates"])
            )
            for p in sorted({pt["nprobe"] for pt in pts}):
                sel = [pt for pt in pts if pt["nprobe"] == p]
                ax.plot(
                    [pt["batch_ms_per_query"] for pt in sel],
                    [pt["recall@10"] for pt in sel],
                    "-o",
                    ms=3,
                    label=f"MUVERA nprobe={p} (batch)",
                )
            ax.plot(
                [r["exhaustive"]["batch_ms_per_query"]], [1.0], "ks", label="exhaustive (batch)"
            )
            single = {
                t: {
                    "exhaustive": r["exhaustive"]["latency"][t],
                    **r["muvera"]["latency"].get(t, {}),
                }
                for t in r["exhaustive"]["latency"]
            }
            hl = r["heuristic"]["latency"]
            for t in hl:
                single.setdefault(t, {})[
                    f"heuristic_k_tokens{r['heuristic']['latency_k_tokens']}"
                ] = hl[t]
        markers = {"threads_1": "v", f"threads_{os.cpu_count()}": "^"}
        for t, methods in single.items():
            for meth, v in methods.items():
                y = v.get("recall@10", np.nan)
                ax.plot(
                    [v["median_ms"]],
                    [y],
                    markers.get(t, "x"),
                    ms=7,
                    alpha=0.8,
                    label=f"{meth} single query, {t.replace('_', ' ')}",
                )
        ax.set_xscale("log")
        ax.set_xlabel("ms per query (log)")
        ax.set_ylabel("recall@10 vs exhaustive Chamfer")
        ax.set_title(title + ": lines = batch, markers = one query per call")
        ax.legend(fontsize=6, loc="best")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = out.with_name(out.stem + "_recall_latency.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(str(path))
    return written
