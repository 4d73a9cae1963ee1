"""The scale benchmark's model, table and plot, computed from the measured figures only (plus the
assumptions it states: a GPU encoding rate, a shard size, a node's RAM and how search time grows
with a shard's size).

Everything here reads the report ``bench.scale`` assembled; a part that was not measured leaves
its entries out (and says so) rather than inventing them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from .common import machine_info

TARGETS = (100_000_000, 1_000_000_000)
CPUS = (16, 64, 256)
GPUS = (8, 64)
RAM_HEADROOM = 0.75  # of a node's RAM a shard may fill (the OS, page cache, queries get the rest)
GPU_SOURCE = (
    "ASSUMPTION, not measured (no GPU on the benchmark machine): the sentence-transformers "
    "pretrained-models table gives all-MiniLM-L6-v2 about 14,200 sentences/s on one V100 for short "
    "sentences (~30 tokens); SciFact abstracts fill the 256-token window, about 8x the tokens, "
    "so ~1,500-2,000 documents/s; --assumed-gpu-docs-per-s sets it"
)


def machine(dists: tuple[str, ...]) -> dict[str, Any]:
    return machine_info(dists)


# ---- the model ----------------------------------------------------------------------------------
def _ok(runs: dict[str, Any], name: str) -> dict[str, Any] | None:
    r = runs.get(name)
    return r if r and r.get("status") == "ok" else None


def _per_doc(r: dict[str, Any]) -> dict[str, float]:
    n = max(1, int(r["count"]))
    ram = sum(int(v.get("ram", 0)) for v in r["memory"].values())
    return {
        "disk_bytes_per_doc": round(r["bytes_on_disk"] / n, 1),
        "ram_bytes_per_doc": round(ram / n, 1),
        "count": n,
    }


def bytes_per_doc(parts: dict[str, Any]) -> dict[str, Any]:
    """Per index kind: bytes on disk and in RAM (``describe()["memory"]``) per document, from the
    built collections (fan-out: the 1-shard layout, i.e. one shard's own cost)."""
    out: dict[str, Any] = {}
    fan = parts.get("fanout", {}).get("runs", {})
    for index in ("flat", "hnsw"):
        r = _ok(fan, f"{index}-s1-inproc") or _ok(fan, f"{index}-single-inproc")
        if r:
            out[index] = {**_per_doc(r), "dim": 128, "from": f"fanout {index} collection"}
    vec = parts.get("index-vectors", {})
    r = _ok(vec.get("runs", {}), "local")
    if r:
        out["ivf-pq"] = {**_per_doc(r), "dim": 128, "from": f"index-vectors {vec['spec']}"}
    text = parts.get("index-text", {})
    r = _ok(text.get("runs", {}), "local-2t") or _ok(text.get("runs", {}), "local-1t")
    if r:
        out["text-flat"] = {
            **_per_doc(r),
            "dim": 384,
            "from": "index-text: MiniLM 384-d, flat, text stored, BM25 index",
        }
    return out


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def _growth(index: str, n_from: float, n_to: float) -> float:
    """ASSUMED growth of one shard's search time with its size: linear for flat (a scan),
    logarithmic for HNSW (graph depth)."""
    if index == "flat":
        return n_to / n_from
    return math.log(max(n_to, 2)) / math.log(max(n_from, 2))


def latency_fit(parts: dict[str, Any]) -> dict[str, Any]:
    """p50 against shard count, per index and host: each shard's own search time (the measured
    single collection's p50, scaled to the shard's size by ``_growth``) plus a per-shard fan-out
    cost fitted by least squares on the 1/2/4-shard measurements."""
    fan = parts.get("fanout", {})
    runs, n = fan.get("runs", {}), fan.get("n")
    out: dict[str, Any] = {}
    for index in ("flat", "hnsw"):
        single = _ok(runs, f"{index}-single-inproc")
        if not single or not n:
            continue
        base = single["single"]["p50_ms"]
        for host in ("inproc", "ray"):
            xs, ys, resid = [], [], []
            for s in fan.get("shards", []):
                r = _ok(runs, f"{index}-s{s}-{host}")
                if r:
                    xs.append(float(s))
                    ys.append(r["single"]["p50_ms"])
                    resid.append(r["single"]["p50_ms"] - base * _growth(index, n, n / s))
            if len(xs) < 2:
                continue
            intercept, slope = _fit_line(xs, ys)
            # fan-out cost per shard: the mean of (measured - shard search) / shards
            cost = sum(rv / x for rv, x in zip(resid, xs, strict=True)) / len(xs)
            out[f"{index}-{host}"] = {
                "shards": xs,
                "p50_ms": ys,
                "single_collection_p50_ms": base,
                "line_fit": {"intercept_ms": round(intercept, 4), "per_shard_ms": round(slope, 4)},
                "fanout_cost_per_shard_ms": round(cost, 4),
                "per_shard_search_ms_at_n": base,
                "n": n,
            }
    return out


def model(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    parts = report["parts"]
    out: dict[str, Any] = {
        "assumptions": {
            "gpu_docs_per_s": args.assumed_gpu_docs_per_s,
            "gpu_docs_per_s_source": GPU_SOURCE,
            "docs_per_shard": args.docs_per_shard,
            "node_ram_gb": args.node_ram_gb,
            "ram_headroom": RAM_HEADROOM,
            "cpu_scaling": "encoding hours on C CPUs = docs / (docs/s per CPU x C x the measured "
            "2-encoder scaling efficiency); the efficiency measured at 2 is assumed to hold at C",
            "shard_search_growth": "flat: linear in the shard's size; hnsw: logarithmic "
            "(assumed, not measured beyond --fanout-n); shards searched in parallel on their "
            "own nodes, plus the measured per-shard fan-out cost",
            "dim": "bytes per document are measured at d=128 (vectors) and d=384 (text-flat: "
            "SciFact through MiniLM, with the text and BM25 stored)",
        }
    }
    text = parts.get("index-text", {})
    one = _ok(text.get("runs", {}), "ray-1x1")
    eff = text.get("derived", {}).get("scaling_efficiency_2_encoders")
    enc: dict[str, Any] = {"measured": bool(one)}
    if one:
        enc["docs_per_s_per_cpu"] = one["rows_per_s"]
        enc["from"] = "index-text ray-1x1 (1 encoder actor, 1 CPU)"
    enc["scaling_efficiency"] = eff
    out["encoding"] = enc
    per_doc = bytes_per_doc(parts)
    out["bytes_per_doc"] = per_doc
    lat = latency_fit(parts)
    out["latency_vs_shards"] = lat
    ram_cap = args.node_ram_gb * 1e9 * RAM_HEADROOM
    targets: dict[str, Any] = {}
    for docs in TARGETS:
        t: dict[str, Any] = {}
        if one:
            rate = one["rows_per_s"] * (eff or 1.0)
            t["encoding_hours_cpu"] = {c: round(docs / (rate * c) / 3600, 1) for c in CPUS}
        t["encoding_hours_gpu_ASSUMED"] = {
            g: round(docs / (args.assumed_gpu_docs_per_s * g) / 3600, 2) for g in GPUS
        }
        kinds: dict[str, Any] = {}
        for kind, b in per_doc.items():
            by_size = math.ceil(docs / args.docs_per_shard)
            by_ram = math.ceil(docs * b["ram_bytes_per_doc"] / ram_cap)
            shards = max(by_size, by_ram)
            k: dict[str, Any] = {
                "shards": shards,
                "shards_by_size": by_size,
                "shards_by_ram": by_ram,
                "docs_per_shard": math.ceil(docs / shards),
                "disk_tb": round(docs * b["disk_bytes_per_doc"] / 1e12, 3),
                "ram_tb": round(docs * b["ram_bytes_per_doc"] / 1e12, 3),
            }
            index = "hnsw" if kind == "hnsw" else "flat" if kind in ("flat", "text-flat") else ""
            fit = lat.get(f"{index}-ray") or lat.get(f"{index}-inproc")
            if fit:
                shard_ms = fit["per_shard_search_ms_at_n"] * _growth(
                    index, fit["n"], k["docs_per_shard"]
                )
                k["predicted_p50_ms"] = round(
                    shard_ms + max(0.0, fit["fanout_cost_per_shard_ms"]) * shards, 2
                )
                k["latency_from"] = f"{index}, {'ray' if lat.get(f'{index}-ray') else 'inproc'}"
            kinds[kind] = k
        t["by_index"] = kinds
        targets[str(docs)] = t
    out["targets"] = targets
    return out


# ---- the table ----------------------------------------------------------------------------------
def _f(x: Any, spec: str = ",.1f") -> str:
    return "-" if x is None else format(x, spec)


def markdown(report: dict[str, Any]) -> str:
    parts, m = report["parts"], report["model"]
    lines: list[str] = [f"### Scale benchmark{' (QUICK: tiny sizes)' if report['quick'] else ''}"]
    text = parts.get("index-text")
    if text:
        lines += [
            "",
            f"Indexing {text['docs']:,} SciFact documents (MiniLM, flat, 2 shards):",
            "",
            "| configuration | docs/s | wall s | driver peak RSS MB |",
            "|---|---:|---:|---:|",
        ]
        for r in text["runs"].values():
            if r["status"] == "ok":
                lines.append(
                    f"| {r['label']} | {r['rows_per_s']:,.1f} | {r['wall_s']:.1f} | "
                    f"{r['peak_rss_mb']:,.0f} |"
                )
            else:
                lines.append(f"| {r['label']} | FAILED: {r['reason']} | | |")
        d = text["derived"]
        lines.append("")
        lines.append(
            f"Ray overhead on one worker: {_f(d.get('ray_overhead_one_worker'), '.1%')} "
            f"(target <= 15%); 2-encoder scaling efficiency: "
            f"{_f(d.get('scaling_efficiency_2_encoders'), '.1%')}"
        )
    vec = parts.get("index-vectors")
    if vec:
        lines += [
            "",
            f"Indexing {vec['rows']:,} x 128 into `{vec['spec']}` (2 shards):",
            "",
            "| configuration | rows/s | wall s | peak RSS MB (driver / tree) | disk MiB |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in vec["runs"].values():
            if r["status"] == "ok":
                lines.append(
                    f"| {r['label']} | {r['rows_per_s']:,.0f} | {r['wall_s']:.1f} | "
                    f"{r['peak_rss_mb']:,.0f} / {r['process_tree_peak_rss_mb']:,.0f} | "
                    f"{r['bytes_on_disk'] / 2**20:,.1f} |"
                )
            else:
                lines.append(f"| {r['label']} | FAILED: {r['reason']} | | | |")
        ratio = vec["derived"].get("ray_vs_local_rows_per_s")
        lines += ["", f"Ray / local rows/s: {_f(ratio, '.3f')}"]
    fan = parts.get("fanout")
    if fan:
        lines += [
            "",
            f"Query fan-out, {fan['n']:,} x 128 (k=10; hnsw ef={fan['ef']}):",
            "",
            "| configuration | p50 ms | p99 ms | batch QPS | recall@10 |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in fan["runs"].values():
            if r["status"] == "ok":
                s = r["single"]
                lines.append(
                    f"| {r['label']} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                    f"{r['batch']['qps']:,.0f} | {r['recall@10_vs_exact']:.4f} |"
                )
            else:
                lines.append(f"| {r['label']} | FAILED: {r['reason']} | | | |")
    lines += [
        "",
        "Scale model (from the figures above; assumptions in the JSON's model.assumptions):",
        "",
    ]
    enc = m["encoding"]
    a = m["assumptions"]
    lines.append(
        f"- encoder: {_f(enc.get('docs_per_s_per_cpu'))} docs/s per CPU (measured, "
        f"ray 1x1); scaling efficiency {_f(enc.get('scaling_efficiency'), '.2f')}"
    )
    lines.append(
        f"- GPU: {a['gpu_docs_per_s']:,.0f} docs/s per GPU is an {a['gpu_docs_per_s_source']}"
    )
    for kind, b in m["bytes_per_doc"].items():
        lines.append(
            f"- {kind} (d={b['dim']}): {b['disk_bytes_per_doc']:,.0f} B/doc on disk, "
            f"{b['ram_bytes_per_doc']:,.0f} B/doc in RAM ({b['from']})"
        )
    for key, f in m["latency_vs_shards"].items():
        lines.append(
            f"- {key}: p50 {f['p50_ms']} ms at shards {f['shards']}; fan-out cost "
            f"{f['fanout_cost_per_shard_ms']:.3f} ms/shard"
        )
    lines += [
        "",
        f"Per shard: <= {a['docs_per_shard']:,} docs and <= {a['ram_headroom']:.0%} of "
        f"a {a['node_ram_gb']:.0f} GB node's RAM.",
        "",
        "| docs | index | shards | disk TB | RAM TB | predicted p50 ms | encode h "
        f"({'/'.join(map(str, CPUS))} CPUs) | encode h ({'/'.join(map(str, GPUS))} "
        "ASSUMED GPUs) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for docs, t in m["targets"].items():
        cpu = t.get("encoding_hours_cpu")
        cpu_s = " / ".join(_f(v) for v in cpu.values()) if cpu else "-"
        gpu_s = " / ".join(_f(v, ",.2f") for v in t["encoding_hours_gpu_ASSUMED"].values())
        for kind, k in t["by_index"].items():
            lines.append(
                f"| {int(docs):,} | {kind} | {k['shards']} | {k['disk_tb']:.2f} | "
                f"{k['ram_tb']:.2f} | {_f(k.get('predicted_p50_ms'), ',.1f')} | "
                f"{cpu_s} | {gpu_s} |"
            )
    return "\n".join(lines)


# ---- the plot -----------------------------------------------------------------------------------
def plot(report: dict[str, Any], path: Path) -> Path | None:
    fan = report["parts"].get("fanout")
    if not fan:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = fan["runs"]
    fig, (ax_q, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"flat": "tab:blue", "hnsw": "tab:orange"}
    for index, color in colors.items():
        single = _ok(runs, f"{index}-single-inproc")
        if single:
            ax_q.axhline(
                single["batch"]["qps"], color=color, ls=":", lw=1, label=f"{index}, one collection"
            )
            ax_l.axhline(
                single["single"]["p50_ms"],
                color=color,
                ls=":",
                lw=1,
                label=f"{index}, one collection",
            )
        for host, style in (("inproc", "-o"), ("ray", "--s")):
            pts = [(s, _ok(runs, f"{index}-s{s}-{host}")) for s in fan["shards"]]
            pts = [(s, r) for s, r in pts if r]
            if not pts:
                continue
            xs = [s for s, _ in pts]
            label = f"{index}, {'in-process' if host == 'inproc' else 'Ray actors'}"
            ax_q.plot(xs, [r["batch"]["qps"] for _, r in pts], style, color=color, label=label)
            ax_l.plot(xs, [r["single"]["p50_ms"] for _, r in pts], style, color=color, label=label)
    for ax, title in ((ax_q, "batch QPS (k=10)"), (ax_l, "single-query p50")):
        ax.set_xlabel("shards")
        ax.set_xticks(fan["shards"])
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_q.set_ylabel("queries / s")
    ax_l.set_ylabel("ms")
    ax_l.legend(fontsize=7)
    cores = report["machine"].get("cores_logical")
    fig.suptitle(
        f"vecdex fan-out: {fan['n']:,} x 128, hnsw ef={fan['ef']}, {cores} cores"
        f"{' (QUICK)' if report['quick'] else ''}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
