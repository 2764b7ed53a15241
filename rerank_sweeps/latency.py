"""Latency ablation: real eval queries, their real LanceDB candidates, every device, p50/p95/p99.

Keys of the flat dict `latency_stage` returns (the run record's "latency"), all floats:

    <device>/<system>/<candidates>/<stat>

- device: `cpu`, or `cuda` when torch sees a GPU (a missing GPU is logged and skipped).
- system: `none` (no reranker: query embedding + vector search only), the arch (`ce` or
  `colbert`: the trained reranker in float32, exactly as `archs.load_reranker` loads it),
  or `<arch>+<optimisation>` for an entry of `conf.latency.optimizations` other than fp32
  (`ce+bf16`, `colbert+int8+sort`; see `rerank_sweeps.speedups`).
- candidates: N in `conf.latency.candidates`: "vector search limit N, rerank N", as in the blog.
- stat, each over `conf.latency.iterations` timed iterations after `conf.latency.warmup`:
  `p50_ms`, `p95_ms`, `p99_ms`, `mean_ms` end to end (embed + search + rerank);
  `retrieval_<p50|p95|p99|mean>_ms` (query embedding + LanceDB vector search);
  `rerank_<p50|p95|p99|mean>_ms` (the reranker's `rerank_vector` on the N rows; not for none);
  `speedup` (optimisations only: fp32 rerank p50 / this rerank p50, on the same device).

Accuracy of each reranker system, re-scored on the eval candidates (the candidates artifact,
`accuracy_queries` of them) through the same `evaluate` functions as results.json, uses
`eval` in the candidates slot:

    <device>/<system>/eval/<query_type>-hit@<k>        hit@k (fraction, like results.json)
    <device>/<system>/eval/<query_type>-hit@<k>_delta  minus the fp32 system's (optimisations)
    <device>/<system>/eval/flagged                     1.0 if hit@flag_k dropped > max_hit_drop

Every device is measured in a fresh `python -m rerank_sweeps.latency_device JOB OUT` subprocess, so
no GPU memory, compiled kernels, thread settings or caches leak between devices. Timing uses
`time.perf_counter`, with `torch.cuda.synchronize()` before and after each timed part on a GPU.
run_dir/latency.json holds the numbers with the protocol, device, threads, dtypes, batch sizes,
max lengths and library versions; run_dir/latency.md is the table.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rerank_sweeps.cache import Artifact
from rerank_sweeps.config import RunConfig
from rerank_sweeps.latency_device import NONE, EvalScoresRef, LatencyJob, run_device
from rerank_sweeps.machine import available_devices, library_versions

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def accuracy_ks(conf: RunConfig, depth: int) -> list[int]:
    """k values to report hit@k at: top_k plus flag_k, where the candidates are deep enough."""
    from rerank_sweeps.evaluate import depth_for

    ks = sorted(set(conf.top_k) | {conf.latency.flag_k})
    return [k for k in ks if depth_for(conf, k) <= depth]


def flatten(devices: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The flat `<device>/<system>/<candidates>/<stat>` dict (see the module docstring)."""
    flat: dict[str, float] = {}
    for device, result in devices.items():
        for system, entry in result["systems"].items():
            for n, stats in entry["latency"].items():
                for stat, value in stats.items():
                    flat[f"{device}/{system}/{n}/{stat}"] = float(value)
                if "speedup" in entry and n in entry["speedup"]:
                    flat[f"{device}/{system}/{n}/speedup"] = float(entry["speedup"][n])
            for metric, value in entry.get("accuracy", {}).items():
                flat[f"{device}/{system}/eval/{metric}"] = float(value)
            for metric, value in entry.get("accuracy_delta", {}).items():
                flat[f"{device}/{system}/eval/{metric}_delta"] = float(value)
            if "flagged" in entry:
                flat[f"{device}/{system}/eval/flagged"] = 1.0 if entry["flagged"] else 0.0
    return flat


def compare_to_reference(
    result: dict[str, Any], reference: str, flag_keys: list[str], max_drop: float
) -> None:
    """Add speedup, accuracy_delta and flagged to every optimised system (in place)."""
    systems = result["systems"]
    ref = systems.get(reference)
    if ref is None:
        return
    for name, entry in systems.items():
        if name in (NONE, reference):
            continue
        entry["speedup"] = {
            n: ref["latency"][n]["rerank_p50_ms"] / stats["rerank_p50_ms"]
            for n, stats in entry["latency"].items()
            if n in ref["latency"] and stats["rerank_p50_ms"] > 0
        }
        entry["accuracy_delta"] = {
            m: v - ref["accuracy"][m] for m, v in entry["accuracy"].items() if m in ref["accuracy"]
        }
        drops = [-entry["accuracy_delta"][m] for m in flag_keys if m in entry["accuracy_delta"]]
        entry["flagged"] = bool(drops) and max(drops) > max_drop + 1e-12


def markdown_table(report: dict[str, Any]) -> str:
    """latency.md: one table per device (p50 / p95 ms end to end and reranking, accuracy)."""
    lines = []
    ns = [str(n) for n in report["protocol"]["candidates"]]
    for device, result in report["devices"].items():
        info = result["info"]
        where = info.get("gpu") or info.get("cpu")
        lines.append(f"### {device}: {where}, {info.get('torch_threads')} torch threads")
        lines.append("")
        header = (
            ["system"] + [f"N={n} p50/p95 ms (rerank p50)" for n in ns] + ["speedup@N", "accuracy"]
        )
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * len(header)) + "|")
        for system, entry in result["systems"].items():
            cells = []
            for n in ns:
                s = entry["latency"].get(n)
                if s is None:
                    cells.append("-")
                    continue
                cell = f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f}"
                if "rerank_p50_ms" in s:
                    cell += f" ({s['rerank_p50_ms']:.1f})"
                cells.append(cell)
            speed = entry.get("speedup", {})
            cells.append(", ".join(f"{speed[n]:.2f}x" for n in ns if n in speed) or "-")
            acc = entry.get("accuracy", {})
            delta = entry.get("accuracy_delta", {})
            text = ", ".join(
                f"{m} {v:.3f}" + (f" ({delta[m] * 100:+.1f} pt)" if m in delta else "")
                for m, v in acc.items()
            )
            if entry.get("flagged"):
                text += " **FLAGGED**"
            cells.append(text or "-")
            lines.append("| " + " | ".join([system, *cells]) + " |")
        for system, why in result.get("skipped", {}).items():
            lines.append(f"{system}: skipped on {device} ({why})")
        lines.append("")
    for device, why in report.get("skipped_devices", {}).items():
        lines.append(f"{device}: skipped ({why})")
    return "\n".join(lines).rstrip() + "\n"


def build_job(
    conf: RunConfig,
    split_art: Artifact,
    index_art: Artifact,
    cand_art: Artifact,
    model_art: Artifact,
    scores_art: Artifact | None = None,
) -> LatencyJob:
    """The job a measuring process runs (`for_device` sets the device per process).

    `scores_art` is the evaluation's scores artifact for this model, reused for the accuracy
    of the optimisation whose numerics it matches (`reusable_eval_scores`).
    """
    from rerank_sweeps.archs import ARCHITECTURES, read_reranker_meta
    from rerank_sweeps.evaluate import depth_for
    from rerank_sweeps.speedups import parse_optimization

    lat = conf.latency
    opts = [parse_optimization(o).name for o in lat.optimizations]  # fails fast on bad names
    if "fp32" not in opts:
        opts.insert(0, "fp32")  # the reference every gain and accuracy change is measured against
    meta = read_reranker_meta(model_art.path)
    depth = json.loads((cand_art.path / "stats.json").read_text())["depth"]
    ks = accuracy_ks(conf, depth)
    arch = ARCHITECTURES.get(meta["arch"])
    return LatencyJob(
        # Absolute: the measuring process must not depend on the working directory.
        split=str(Path(split_art.path).resolve()),
        index=str(Path(index_art.path).resolve()),
        candidates_artifact=str(Path(cand_art.path).resolve()),
        model=str(Path(model_art.path).resolve()),
        arch=meta["arch"],
        arch_class=f"{type(arch).__module__}:{type(arch).__qualname__}" if arch else None,
        arch_file=inspect.getsourcefile(type(arch)) if arch else None,
        embedder=conf.index.embedder,
        ann_nprobes=getattr(conf.index, "ann_nprobes", None),
        ann_refine_factor=getattr(conf.index, "ann_refine_factor", None),
        candidates=tuple(dict.fromkeys(lat.candidates)),
        warmup=lat.warmup,
        iterations=lat.iterations,
        queries=lat.queries,
        optimizations=tuple(dict.fromkeys(opts)),
        threads=lat.threads,
        batch_size=lat.batch_size,
        sort_batch_size=lat.sort_batch_size,
        accuracy_queries=lat.accuracy_queries,
        accuracy_ks=tuple(ks),
        query_types=tuple(conf.query_type.types),
        # Candidates per leg for each k, as the evaluation reranks them (eval.depth rule).
        depth_per_leg={k: depth_for(conf, k) for k in ks},
        eval_scores=_eval_scores_ref(scores_art),
    )


def _eval_scores_ref(scores_art: Artifact | None) -> EvalScoresRef | None:
    if scores_art is None:
        return None
    stats = json.loads((Path(scores_art.path) / "stats.json").read_text())
    return EvalScoresRef(
        path=str(Path(scores_art.path).resolve()),
        device=str(stats["device"]).split(":")[0],
        bf16=bool(stats["bf16"]),
    )


def latency_stage(
    conf: RunConfig,
    split_art: Artifact,
    index_art: Artifact,
    cand_art: Artifact,
    model_art: Artifact,
    run_dir: Path,
    scores_art: Artifact | None = None,
) -> dict[str, float]:
    """Measure the run's reranker and the no-reranker baseline on every available device.

    Writes run_dir/latency.json and latency.md and returns the flat dict described in the
    module docstring. Not cached: latency belongs to the machine and the moment, not to the
    inputs.
    """
    from rerank_sweeps.speedups import system_name

    started = time.perf_counter()
    job = build_job(conf, split_art, index_art, cand_art, model_art, scores_art)
    devices, skipped = available_devices(conf.latency.devices)
    reference = system_name(job.arch, "fp32")
    flag_keys = [f"{qt}-hit@{conf.latency.flag_k}" for qt in job.query_types]
    results: dict[str, dict[str, Any]] = {}
    for device in devices:
        log.info("latency: measuring on %s in a fresh process", device)
        result = run_device(job.for_device(device))
        compare_to_reference(result, reference, flag_keys, conf.latency.max_hit_drop)
        results[device] = result
    report = {
        "protocol": {
            "retrieval": "query embedding (conf.index.embedder, on the device) + LanceDB vector "
            "search with limit N, selecting id and text",
            "rerank": "reranker.rerank_vector(query, the N rows): LanceDB's Reranker interface",
            "timer": "time.perf_counter; torch.cuda.synchronize before and after each part on GPU",
            "candidates": list(job.candidates),
            "warmup": job.warmup,
            "iterations": job.iterations,
            "queries": job.queries,
            "percentiles": "numpy linear interpolation over the timed iterations",
            "accuracy": "hit@k re-scored on the eval candidates (candidates artifact), "
            f"{'all' if job.accuracy_queries is None else job.accuracy_queries} queries",
            "flag": f"hit@{conf.latency.flag_k} drop > {conf.latency.max_hit_drop} vs fp32",
            "isolation": "one fresh Python process per device",
        },
        "config": asdict(conf.latency),
        "model": {"artifact": model_art.key, "arch": job.arch, "path": job.model},
        "candidates_artifact": cand_art.key,
        "index_artifact": index_art.key,
        "versions": library_versions(),
        "devices": results,
        "skipped_devices": skipped,
        "seconds": round(time.perf_counter() - started, 3),
    }
    flat = flatten(results)
    report["metrics"] = flat
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "latency.json").write_text(json.dumps(report, indent=2))
    table = markdown_table(report)
    (run_dir / "latency.md").write_text(table)
    from rerank_sweeps.console import latency_summary

    print(latency_summary(flat), flush=True)
    return flat
