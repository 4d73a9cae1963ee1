"""MUVERA against PLAID (fast-plaid, the Rust engine behind PyLate) on the same SciFact tokens.

Both index the same token sets (the token encoder's, cached by ``bench.muvera_data``; variant
``--variant``, default the untrained 128-d one: no trained token model is kept between sessions)
and answer the SciFact test queries. Reported for each: recall@10 against exhaustive Chamfer
(MaxSim), nDCG@10 against the qrels (pytrec_eval), latency one query per call (p50 / p99) and per
query in one batched call, index build time and size. Then the comparison the MUVERA paper makes:
at equal recall, how much faster; at equal latency, how much more recall.

fast-plaid pins torch==2.11.0, so it runs in its own virtual environment that this benchmark makes
(``bench/.venv-plaid``, never the project's): torch and fast-plaid are installed without their
dependencies, which keeps the multi-GB CUDA packages of that torch build out (the CPU paths do not
load them), then fast-plaid's own small dependencies. Its side runs in ``bench/plaid_worker.py``.

Usage:
    python -m bench.plaid [--variant untrained128] [--candidates 20,50,100,200,400]
        [--plaid 1:256,2:512,4:1024,8:4096] [--single 300]
Results: bench/results/plaid.json and plaid.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from .common import CACHE_ROOT, RESULTS, ROOT, json_default, log, split, timed  # noqa: E402
from .muvera_data import ENCODERS, scifact_tokens  # noqa: E402

VENV = ROOT / "bench" / ".venv-plaid"
PINNED = ("torch==2.11.0", "fast-plaid==1.7.0.2110")
# fast-plaid's and torch's own dependencies, less torch's CUDA packages.
DEPS = (
    "numpy>=1.26.4",
    "joblib>=1.5.1",
    "usearch>=2.21.0",
    "fastkmeans==0.5.0",
    "filelock",
    "typing-extensions>=4.10",
    "sympy>=1.13.3",
    "networkx>=2.5.1",
    "jinja2",
    "fsspec>=0.8.5",
)
K = 10


def plaid_python() -> Path:
    """The PLAID environment's python, made on first use."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if stamp.exists():
        return python
    log(f"making {VENV} ({', '.join(PINNED)}; a few minutes the first time)")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", *PINNED], check=True)
    subprocess.run([*pip, *DEPS], check=True)
    subprocess.run([str(python), "-c", "import torch, fast_plaid"], check=True)
    stamp.write_text(" ".join(PINNED) + "\n")
    return python


def export(directory: Path, name: str, tokens: np.ndarray, offsets: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / f"{name}.tokens.npy", tokens.astype(np.float16), allow_pickle=False)
    np.save(directory / f"{name}.offsets.npy", offsets.astype(np.int64), allow_pickle=False)


def recall(found: list[list[int]] | np.ndarray, truth: np.ndarray) -> float:
    hits = sum(
        len(set(int(x) for x in f[:K]) & set(t[:K].tolist()))
        for f, t in zip(found, truth, strict=True)
    )
    return round(hits / (K * len(truth)), 4)


def ndcg(found: list[list[int]] | np.ndarray, qids: list[str], doc_ids: list[str], qrels) -> float:
    from engine.evaluate import evaluate_run

    run = {
        q: [doc_ids[int(i)] for i in row[:K] if i >= 0] for q, row in zip(qids, found, strict=True)
    }
    return round(evaluate_run(run, {q: qrels[q] for q in qids})["ndcg@10"], 4)


def muvera_points(args, spec, dim, docs, qs, gt, qids, doc_ids, qrels) -> dict[str, Any]:
    """One MUVERA configuration: build, the candidate curves (recall@10 against exhaustive
    Chamfer after the exact rerank, and the paper's 1-Recall@N: is the exhaustive top-1 among
    the N candidates), then end-to-end searches at each candidate count."""
    import index as ix

    mv: Any = ix.from_spec(spec, dim, "ip")
    labels = np.arange(len(docs), dtype=np.int64)
    _, build_s = timed(lambda: mv.add(docs, labels))
    cand = mv.candidate_labels(qs, candidates=max(args.curve))
    curve = {
        str(n): {
            "recall@10": recall_within(cand[:, :n], gt),
            "1-recall@n": round(
                float(np.mean([gt[i, 0] in cand[i, :n] for i in range(len(qs))])), 4
            ),
        }
        for n in args.curve
    }
    points = []
    single = qs[: args.single]
    for c in args.candidates:
        mv.search(qs[:2], K, candidates=c)  # warm-up
        (_, lab), batch_s = timed(lambda c=c: mv.search(qs, K, candidates=c))
        times = []
        for q in single:
            t0 = time.perf_counter()
            mv.search([q], K, candidates=c)
            times.append(time.perf_counter() - t0)
        points.append(
            {
                "candidates": c,
                "recall@10": recall(lab, gt),
                "ndcg@10": ndcg(lab, qids, doc_ids, qrels),
                "batch_ms_per_query": round(1000 * batch_s / len(qs), 3),
                "single_p50_ms": round(1000 * statistics.median(times), 3),
                "single_p99_ms": round(1000 * float(np.percentile(times, 99)), 3),
            }
        )
        log(f"{spec} candidates={c}: {points[-1]}")
    mem = mv.memory_usage()
    inner = {k: v for k, v in mem.items() if k.startswith("inner")}
    return {
        "spec": mv.spec,
        "fde_dims": int(mv.fde.out_dim),
        "build_s": round(build_s, 2),
        "ram_bytes": int(sum(v["ram"] for v in mem.values())),
        "fde_index_bytes_per_doc": round(sum(v["ram"] for v in inner.values()) / len(docs), 1),
        "token_bytes_per_doc": round(
            sum(v["ram"] + v["disk"] for k, v in mem.items() if k == "tokens") / len(docs), 1
        ),
        "curve": curve,
        "points": points,
    }


def recall_within(cand: np.ndarray, gt: np.ndarray) -> float:
    """Recall@10 after an exact rerank of ``cand``: the share of the true top-10 among them."""
    hits = sum(len(set(c.tolist()) & set(t[:K].tolist())) for c, t in zip(cand, gt, strict=True))
    return round(hits / (K * len(gt)), 4)


def compare(muvera: list[dict], plaid: list[dict]) -> list[dict]:
    """Per PLAID setting: the fastest MUVERA point at equal or better recall@10 (latency
    ratio), and the best MUVERA recall at equal or lower single-query latency."""
    out = []
    for p in plaid:
        better = [m for m in muvera if m["recall@10"] >= p["recall@10"]]
        fastest = min(better, key=lambda m: m["single_p50_ms"]) if better else None
        within = [m for m in muvera if m["single_p50_ms"] <= p["single_p50_ms"]]
        best = max(within, key=lambda m: m["recall@10"]) if within else None
        out.append(
            {
                "plaid": {k: p[k] for k in ("n_ivf_probe", "n_full_scores", "recall@10")},
                "plaid_single_p50_ms": p["single_p50_ms"],
                "muvera_at_equal_recall": fastest
                and {
                    "candidates": fastest["candidates"],
                    "recall@10": fastest["recall@10"],
                    "single_p50_ms": fastest["single_p50_ms"],
                    "latency_ratio_plaid_over_muvera": round(
                        p["single_p50_ms"] / fastest["single_p50_ms"], 2
                    ),
                },
                "muvera_at_equal_latency": best
                and {
                    "candidates": best["candidates"],
                    "recall@10": best["recall@10"],
                    "recall_gain": round(best["recall@10"] - p["recall@10"], 4),
                },
            }
        )
    return out


def fde_name(spec: str) -> str:
    """``(R_reps,k_sim,d_proj)`` plus ``->d_final`` and the final projection, from a spec."""
    p = dict(kv.split("=", 1) for kv in spec.split(":", 1)[1].split(","))
    name = f"({p['r_reps']},{p['k_sim']},{p['d_proj']})"
    if p.get("d_final", "0") != "0":
        name += f"->{p['d_final']} {p.get('final', 'dense')}"
    return name


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    p = result["plaid"]["settings"]
    for cfg in result["muvera_configs"]:
        m = cfg["points"]
        ax.plot(
            [x["single_p50_ms"] for x in m],
            [x["recall@10"] for x in m],
            "o-",
            label=f"vecdex MUVERA {fde_name(cfg['spec'])}",
        )
        for x in m:
            ax.annotate(str(x["candidates"]), (x["single_p50_ms"], x["recall@10"]), fontsize=7)
    ax.plot([x["single_p50_ms"] for x in p], [x["recall@10"] for x in p], "s--", label="fast-plaid")
    for x in p:
        ax.annotate(
            f"{x['n_ivf_probe']}/{x['n_full_scores']}",
            (x["single_p50_ms"], x["recall@10"]),
            fontsize=7,
        )
    ex = result["exhaustive"]["single_p50_ms"]
    ax.axvline(ex, color="gray", ls=":", label=f"exhaustive Chamfer ({ex:.1f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("latency, one query per call, p50 (ms)")
    ax.set_ylabel("recall@10 against exhaustive Chamfer")
    ax.set_title(f"SciFact test, {result['variant']} tokens, 2 CPU threads")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    p.add_argument("--variant", default="untrained128", choices=sorted(ENCODERS))
    p.add_argument(
        "--token-model", help="with --variant trained: the saved token model's directory"
    )
    p.add_argument("--candidates", default="20,50,100,200,400")
    p.add_argument(
        "--muvera",
        default="muvera,muvera:r_reps=40,k_sim=6,d_proj=128,d_final=10240,final=sketch",
        help="MUVERA specs, comma-separated by ';' when they hold commas: see --help",
    )
    p.add_argument("--curve", default="10,20,50,100,200,500,1000")
    p.add_argument("--plaid", default="1:256,2:512,4:1024,8:4096")
    p.add_argument("--single", type=int, default=300, help="queries timed one per call")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    args.candidates = [int(c) for c in args.candidates.split(",")]
    args.curve = [int(c) for c in args.curve.split(",")]
    if args.variant == "trained":
        if not args.token_model:
            p.error("--variant trained needs --token-model DIR")
        ENCODERS["trained"]["model"] = args.token_model
    # "muvera,muvera:a=1,b=2" -> ["muvera", "muvera:a=1,b=2"]: a new spec starts at "muvera".
    specs: list[str] = []
    for part in args.muvera.split(","):
        if part.startswith("muvera") or not specs:
            specs.append(part)
        else:
            specs[-1] += "," + part
    import torch

    from engine import beir
    from index import ChamferIndex

    torch.set_num_threads(args.threads)
    python = plaid_python()
    corpus = beir.read_jsonl(args.data / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in beir.read_jsonl(args.data / "queries.jsonl")}
    qrels = beir.read_qrels(args.data / "qrels" / "test.tsv")
    qids = [q for q in qrels if q in queries]
    (dt, d_off, _), (qt, q_off, _) = scifact_tokens(args.data, args.variant, qids, queries, corpus)
    q_off = q_off[: len(qids) + 1]
    qt = qt[: q_off[-1]]
    doc_ids = [d["_id"] for d in corpus]
    dim = int(dt.shape[1])
    docs = split(dt, d_off)
    qs = [x.astype(np.float32) for x in split(qt, q_off)]
    log(f"{len(docs)} documents ({dt.shape[0]:,} tokens), {len(qs)} queries, d={dim}")

    ex = ChamferIndex(dim, metric="ip")
    ex.add(docs, np.arange(len(docs), dtype=np.int64))
    ex.search(qs[:1], K)
    (_, gt), _ = timed(lambda: ex.search(qs, K))
    times = []
    for q in qs[: args.single]:
        t0 = time.perf_counter()
        ex.search([q], K)
        times.append(time.perf_counter() - t0)
    result: dict[str, Any] = {
        "benchmark": "plaid",
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "variant": args.variant,
        "documents": len(docs),
        "document_tokens": int(dt.shape[0]),
        "queries": len(qs),
        "threads": args.threads,
        "exhaustive": {
            "ndcg@10": ndcg(gt, qids, doc_ids, qrels),
            "single_p50_ms": round(1000 * statistics.median(times), 3),
        },
    }
    log(f"exhaustive: {result['exhaustive']}")
    result["muvera_configs"] = [
        muvera_points(args, spec, dim, docs, qs, gt, qids, doc_ids, qrels) for spec in specs
    ]
    result["muvera"] = result["muvera_configs"][0]

    work = CACHE_ROOT / "plaid" / args.variant
    export(work, "docs", dt, d_off)
    export(work, "queries", qt, q_off)
    out = work / "plaid-result.json"
    cmd = [str(python), str(ROOT / "bench" / "plaid_worker.py"), str(work), str(out)]
    cmd += ["--settings", args.plaid, "--threads", str(args.threads), "--single", str(args.single)]
    log("fast-plaid: " + " ".join(cmd))
    subprocess.run(cmd, check=True, env={**os.environ, "PLAID_VERSION": PINNED[1]})
    plaid = json.loads(out.read_text())
    for s in plaid["settings"]:
        top = s.pop("top")
        s["recall@10"] = recall(top, gt)
        s["ndcg@10"] = ndcg(top, qids, doc_ids, qrels)
        log(f"fast-plaid {s}")
    result["plaid"] = plaid
    result["comparison"] = {
        m["spec"]: compare(m["points"], plaid["settings"]) for m in result["muvera_configs"]
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "plaid" if args.variant == "untrained128" else f"plaid-{args.variant}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1, default=json_default))
    plot(result, RESULTS / f"{name}.png")
    log(f"wrote {RESULTS / 'plaid.json'} and plaid.png")
    for spec, rows in result["comparison"].items():
        for row in rows:
            log(f"{spec}: {json.dumps(row)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--plot"]:  # redraw from the saved JSON
        plot(json.loads((RESULTS / "plaid.json").read_text()), RESULTS / "plaid.png")
    else:
        main()
