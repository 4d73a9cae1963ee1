"""Hybrid search on BEIR data: quality of dense / lexical / fused rankings, the fusion fitted on
the train split, per-query latency, lexical speed against raw bm25s, and LanceDB side by side.

    python -m bench.hybrid                                  # SciFact, everything (~25 min, 2 cores)
    python -m bench.hybrid --quick                          # a subset, for development (~2 min)
    python -m bench.hybrid DIR --dense-model M --token-model token

Everything is measured in one process run on the same data:

1. quality on the test split (pytrec_eval through ``engine.metrics``): exact dense search (the
   default MiniLM and any ``--dense-model``, e.g. one fine-tuned by ``vecdex train``;
   ``--token-model`` through an exhaustive ``chamfer`` collection), lexical (BM25), hybrid with
   each fusion (rrf, weighted, dbsf) at the library's default weight / rrf_k / depth, the
   library's default fusion flagged;
2. a fusion sweep per single-vector model on the TRAIN split (weighted and dbsf: dense weight
   0..1; rrf: rrf_k x weight; depth 50 / 100 / 200 for the best of each); the setting best on
   train over all three is the "fitted fusion" and is then scored on test; the best pipeline is
   the best on train over every model and setting, scored on test. Test figures for every setting
   are reported only to show how flat the curves are: nothing is chosen on them;
3. latency, one query at a time with cached query vectors (encoding excluded), median and p95,
   hybrid at the library's default fusion (bench/hybrid_peers.py);
4. lexical indexing docs/s and queries/s against raw bm25s on the same texts;
5. LanceDB (embedded, no ANN index: exact vector search; its native full-text index; hybrid with
   its default RRF reranker), quality and latency interleaved with vecdex's.

Data, embeddings, quality and the sweep are in bench/hybrid_quality.py, latency / LanceDB / raw
bm25s in bench/hybrid_peers.py, the table and plot in bench/hybrid_report.py. Embeddings are
cached under bench/.cache/hybrid (keyed by model and texts). Results go to
bench/results/hybrid.json and hybrid.png (``--quick``: bench/.cache/hybrid/hybrid-quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import json_default  # noqa: E402
from bench.hybrid_peers import (  # noqa: E402
    K_LATENCY,
    LanceSide,
    lancedb_quality,
    latency,
    lexical_speed,
)
from bench.hybrid_quality import (  # noqa: E402
    CACHE,
    DEPTHS,
    K_EVAL,
    RRF_KS,
    RRF_WEIGHTS,
    SCORE_FUSIONS,
    WEIGHTS,
    Setting,
    Side,
    dense_side,
    load_data,
    quality,
    sweep,
    token_quality,
)
from bench.hybrid_report import machine_info, plot, table  # noqa: E402
from engine import Engine  # noqa: E402
from engine import fusion as fz  # noqa: E402
from index.lexical import BM25Index  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DEFAULT_DATA = Path("/work/shared/data/scifact")

DEFAULT_FLOOR = 0.71  # hybrid at the library default
FITTED_FLOOR = 0.73  # hybrid at the fusion fitted on train
BEST_FLOOR = 0.75  # the best pipeline over models and fusions, chosen on train
REGRESSION_SLACK = 0.02  # the default may fall at most this far below the better of its parts
TARGETS = {
    "default_quality": f"hybrid at the library default fusion: test nDCG@10 >= {DEFAULT_FLOOR}",
    "fitted_quality": f"hybrid at the fusion fitted on train: test nDCG@10 >= {FITTED_FLOOR}",
    "best_pipeline": "best vecdex pipeline (models x fusions, chosen on train): test nDCG@10 "
    f">= {BEST_FLOOR}",
    "no_regression": "library default hybrid >= max(dense, lexical) - "
    f"{REGRESSION_SLACK} test nDCG@10",
    "hybrid_latency": "median hybrid <= median dense + median lexical + 1 ms",
    "lexical_indexing": "vecdex BM25Index add + rebuild >= 0.9x raw bm25s docs/s",
    "lexical_qps": "vecdex col.search(mode='lexical') >= 0.8x raw bm25s queries/s, one at a time",
    "lexical_qps_batched": "vecdex search_batch(mode='lexical') >= 0.8x raw bm25s batched",
    "vs_lancedb": "vecdex hybrid >= 5x faster than LanceDB hybrid (median ms per query)",
}
EPS = 1e-9  # figures are rounded to 4 places: a tie with a floor passes


# ---- the run -------------------------------------------------------------------------------------
def bench_dataset(
    args: argparse.Namespace, path: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    t_start = time.perf_counter()
    data = load_data(path, args.quick)
    log(
        f"{data.name}: {len(data.doc_ids)} docs, {len(data.qids['train'])} train / "
        f"{len(data.qids['test'])} test queries"
    )
    out: dict[str, Any] = {
        "data": {
            "path": str(path),
            "docs": len(data.doc_ids),
            "train_queries": len(data.qids["train"]),
            "test_queries": len(data.qids["test"]),
            "subset": "quick" if args.quick else "full",
        },
        "encoding": {},
        "quality_test": [],
        "sweeps": {},
        "skipped": [],
    }
    dense_specs = [("MiniLM (default)", "default")] + [(f"dense:{m}", m) for m in args.dense_model]
    with tempfile.TemporaryDirectory(prefix="vecdex-bench-hybrid-") as tmp:
        eng = Engine(Path(tmp) / "engine", checkpoint_bytes=1 << 62)
        main: tuple[Side, Any] | None = None
        for n_model, (label, spec) in enumerate(dense_specs):
            log(f"  {label}: vectors (cached or encoded now)")
            info: dict[str, Any] = {}
            out["encoding"][label] = info
            side, docs = dense_side(eng, data, spec, f"d{n_model}", info)
            if main is None:
                main = side, docs
                out["quality_test"].append(
                    {
                        "system": "vecdex",
                        "model": "BM25 (bm25s)",
                        "mode": "lexical",
                        **side.score("test", "lexical"),
                    }
                )
            out["quality_test"] += quality(side, label)
            log(f"  {label}: quality on test done; sweeping fusions on train")
            t0 = time.perf_counter()
            out["sweeps"][label] = sweep(side, log)
            info["sweep_s"] = round(time.perf_counter() - t0, 1)
        assert main is not None
        main_side, main_vectors = main
        if args.token_model:
            out["quality_test"] += token_quality(args.token_model, eng, data, log, out)
        log("  latency (one query at a time)")
        lance: LanceSide | None = None
        if not args.skip_lancedb:
            try:
                lance = LanceSide(Path(tmp) / "lancedb", data, main_vectors)
            except Exception as e:  # recorded, and the rest goes on
                out["skipped"].append({"name": "lancedb", "reason": f"{type(e).__name__}: {e}"})
                log(f"  LanceDB failed: {e}")
        lat, first = latency(main_side, lance, args.repeats, args.warmup, log)
        out["latency"] = {
            "k": K_LATENCY,
            "queries": len(data.qids["test"]),
            "repeats": args.repeats,
            "warmup_queries": args.warmup,
            "model": dense_specs[0][0],
            "method": "one query at a time, cached query vectors (encoding excluded), systems "
            "interleaved per query (order rotated), all passes pooled",
            "fusion": fz.Fusion().to_dict(),
            "systems": lat,
        }
        if lance is not None:
            out["lancedb"] = lancedb_quality(lance, main_side, data, first, lat)
        eng.close()
    if not args.skip_speed:
        log("  lexical speed against raw bm25s")
        out["lexical_speed"] = lexical_speed(data, main_vectors, args.repeats)
    out["default_vs_parts"] = default_vs_parts(out["quality_test"])
    out["best_pipeline"] = best_pipeline(out["sweeps"])
    out["targets"] = targets(out)
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    return out


def default_vs_parts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: the library default hybrid against the better of its dense and lexical parts."""
    lexical = next(r["ndcg@10"] for r in rows if r["mode"] == "lexical")
    out = {}
    for dense in (r for r in rows if r["mode"] == "dense"):
        model = dense["model"]
        default = next(r for r in rows if r["model"] == model and r.get("library_default"))
        better = max(dense["ndcg@10"], lexical)
        margin = round(default["ndcg@10"] - better, 4)
        out[model] = {
            "dense": dense["ndcg@10"],
            "lexical": lexical,
            "better_part": better,
            "default_hybrid": default["ndcg@10"],
            "default_fusion": default["fusion_setting"],
            "margin": margin,
            "pass": margin >= -REGRESSION_SLACK - EPS,
        }
    return out


def best_pipeline(sweeps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The best (model, fusion setting) on train over every swept model, scored on test. Weight 1
    (0) of the score fusions is the dense (lexical) ranking alone, so single-sided pipelines are
    among the candidates."""
    best: tuple[str, dict[str, Any]] | None = None
    for model, sw in sweeps.items():  # ties: the earlier model, then the earlier setting
        for s in sw["settings"]:
            if best is None or s["train"]["ndcg@10"] > best[1]["train"]["ndcg@10"]:
                best = model, s
    assert best is not None
    model, s = best
    st = Setting(s["method"], s["weight"], s["rrf_k"], s["depth"])
    return {
        "chosen_on": "train nDCG@10 over every model's sweep",
        "model": model,
        "label": st.label(),
        "setting": st.kwargs(),
        "train": s["train"],
        "test": s["test"],
        "per_model_fitted": {
            m: {
                "label": sw["fitted"]["label"],
                "train": sw["fitted"]["train"]["ndcg@10"],
                "test": sw["fitted"]["test"]["ndcg@10"],
            }
            for m, sw in sweeps.items()
        },
        "caveat": "a model fine-tuned on this dataset's train split scores in-sample on train, "
        "so choosing across models (and its fusion weight) on train favours it; the test figure "
        "of the chosen pipeline is still held out",
    }


def targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for r in out["quality_test"]:
        if r.get("library_default"):
            v = r["ndcg@10"]
            rows.append(
                {
                    "target": TARGETS["default_quality"],
                    "model": r["model"],
                    "value": v,
                    "pass": v >= DEFAULT_FLOOR - EPS,
                }
            )
    for model, sw in out["sweeps"].items():
        v = sw["fitted"]["test"]["ndcg@10"]
        rows.append(
            {
                "target": TARGETS["fitted_quality"],
                "model": model,
                "value": f"{v} ({sw['fitted']['label']})",
                "pass": v >= FITTED_FLOOR - EPS,
            }
        )
    b = out["best_pipeline"]
    rows.append(
        {
            "target": TARGETS["best_pipeline"],
            "model": b["model"],
            "value": f"{b['test']['ndcg@10']} ({b['label']}; train {b['train']['ndcg@10']})",
            "pass": b["test"]["ndcg@10"] >= BEST_FLOOR - EPS,
        }
    )
    for model, c in out["default_vs_parts"].items():
        rows.append(
            {
                "target": TARGETS["no_regression"],
                "model": model,
                "value": f"{c['default_hybrid']} vs {c['better_part']} ({c['margin']:+.4f})",
                "pass": c["pass"],
            }
        )
    lat = out["latency"]["systems"]
    d, lx, h = (lat[f"vecdex {m}"]["median_ms"] for m in ("dense", "lexical", "hybrid"))
    rows.append(
        {
            "target": TARGETS["hybrid_latency"],
            "value": f"{h:.3f} <= {d + lx + 1:.3f} ms",
            "pass": h <= d + lx + 1.0,
        }
    )
    if "lexical_speed" in out:
        r = out["lexical_speed"]["ratios"]
        for key, name, floor in (
            ("lexical_indexing", "indexing_index", 0.9),
            ("lexical_qps", "qps_one_at_a_time", 0.8),
            ("lexical_qps_batched", "qps_batched", 0.8),
        ):
            rows.append({"target": TARGETS[key], "value": r[name], "pass": r[name] >= floor})
    if "lancedb" in out:
        s = out["lancedb"]["speedup_vecdex_hybrid_vs_lancedb_hybrid"]
        rows.append({"target": TARGETS["vs_lancedb"], "value": s, "pass": s >= 5.0})
    else:
        rows.append({"target": TARGETS["vs_lancedb"], "value": None, "pass": None})
    return rows


# ---- command line --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.hybrid",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "data",
        nargs="*",
        type=Path,
        default=[DEFAULT_DATA],
        metavar="BEIR_DIR",
        help=f"BEIR directories with qrels/train.tsv and test.tsv (default {DEFAULT_DATA})",
    )
    m = p.add_argument_group("models")
    m.add_argument(
        "--dense-model",
        action="append",
        default=[],
        metavar="DIR",
        help="a trained single-vector model directory, beside the default MiniLM (repeatable)",
    )
    m.add_argument(
        "--token-model",
        metavar="DIR",
        help="a multi-vector (token) model directory or spec ('token'), searched "
        "through an exhaustive chamfer collection (slow: ~0.5 s a query on 2 cores)",
    )
    r = p.add_argument_group("run")
    r.add_argument(
        "--quick",
        action="store_true",
        help="40 test / 120 train queries over ~1,000 documents, for development",
    )
    r.add_argument("--repeats", type=int, default=3, help="passes for timings (median)")
    r.add_argument("--warmup", type=int, default=20, help="warm-up queries before timing")
    r.add_argument("--skip-lancedb", action="store_true")
    r.add_argument("--skip-speed", action="store_true", help="skip lexical speed vs raw bm25s")
    o = p.add_argument_group("output")
    o.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default bench/results; --quick: bench/.cache/hybrid)",
    )
    o.add_argument("--name", default=None, help="file stem (default hybrid / hybrid-quick)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    args.out = args.out or (CACHE if args.quick else RESULTS)
    args.name = args.name or ("hybrid-quick" if args.quick else "hybrid")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    datasets = {}
    for path in args.data:
        datasets[path.name] = bench_dataset(args, path, log)
    report = {
        "benchmark": "hybrid",
        "command": "python -m bench.hybrid " + " ".join(sys.argv[1:] if argv is None else argv),
        "parameters": {
            "k_eval": K_EVAL,
            "k_latency": K_LATENCY,
            "dense_index": "flat (exact), cosine",
            "lexical": BM25Index.config_keys,
            "library_fusion_defaults": fz.Fusion().to_dict(),
            "fusions": list(fz.FUSIONS),
            "sweep": {
                "weights": WEIGHTS,
                "weights_for": list(SCORE_FUSIONS),
                "rrf_ks": RRF_KS,
                "rrf_weights": RRF_WEIGHTS,
                "depths": DEPTHS,
                "chosen_on": "train",
            },
            "repeats": args.repeats,
            "warmup": args.warmup,
            "quick": args.quick,
            "dense_models": ["default", *args.dense_model],
            "token_model": args.token_model,
        },
        "machine": machine_info(),
        "datasets": datasets,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"{args.name}.json", args.out / f"{args.name}.png"
    json_path.write_text(json.dumps(report, indent=1, default=json_default) + "\n")
    plot(report, png_path)
    print(table(report))
    print(f"\nwrote {json_path} and {png_path} in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
