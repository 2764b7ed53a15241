"""Latency ablation: real eval queries, their real LanceDB candidates, every device, p50/p95/p99.

Keys of the flat dict `latency_stage` returns (the run record's "latency"), all floats:

    <device>/<system>/<candidates>/<stat>

- device: `cpu`, or `cuda` when torch sees a GPU (a missing GPU is logged and skipped).
- system: `none` (no reranker: query embedding + vector search only), the arch (`ce` or
  `colbert`: the trained reranker in float32, exactly as `rerankers.load_reranker` loads it),
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

Every device is measured in a fresh `python -m rerank_sweeps.latency JOB OUT` subprocess, so
no GPU memory, compiled kernels, thread settings or caches leak between devices. Timing uses
`time.perf_counter`, with `torch.cuda.synchronize()` before and after each timed part on a GPU.
run_dir/latency.json holds the numbers with the protocol, device, threads, dtypes, batch sizes,
max lengths and library versions; run_dir/latency.md is the table.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from rerank_sweeps.cache import Artifact, artifact_at
from rerank_sweeps.config import ConfigError, RunConfig, UserError

log = logging.getLogger(__name__)

STATS = ("p50", "p95", "p99", "mean")
PARTS = ("total", "retrieval", "rerank")
NONE = "none"
ACCURACY_CHUNK = 32  # eval queries re-scored per batched pass
LIBRARIES = ("torch", "transformers", "sentence_transformers", "pylate", "lancedb", "numpy")
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# The timing harness (model-agnostic; tested with fakes)
# --------------------------------------------------------------------------------------------


def time_pipeline(
    queries: Sequence[str],
    retrieve: Callable[[str], T],
    rerank: Callable[[str, T], Any] | None,
    warmup: int,
    iterations: int,
    synchronize: Callable[[], None] | None = None,
    progress: Any = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Milliseconds per timed iteration of one system: {"total", "retrieval", "rerank"}.

    `time_systems` with a single system (see there).
    """
    return time_systems(
        queries, retrieve, {"_": rerank}, warmup, iterations, synchronize, progress, clock
    )["_"]


def time_systems(
    queries: Sequence[str],
    retrieve: Callable[[str], T],
    reranks: dict[str, Callable[[str, T], Any] | None],
    warmup: int,
    iterations: int,
    synchronize: Callable[[], None] | None = None,
    progress: Any = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per timed iteration of every system: {name: {"total", "retrieval", "rerank"}}.

    A system is `retrieve(q)` followed by its `rerank(q, candidates)` (None: retrieval only).
    Every system first runs `warmup` iterations, all before any timed one, so a cold start of
    the shared retrieval path (the embedder's first calls, LanceDB opening the table) is paid
    before timing, by nobody in particular. Then iteration i runs every system on the same
    q = queries[i % len], in an order rotated by i, so drifting conditions (clocks, load,
    caches) fall on all systems alike. `synchronize` (e.g. `torch.cuda.synchronize`) is called
    around each timed part, so queued GPU work is counted where it was issued.
    """
    if not queries:
        raise ValueError("time_pipeline needs at least one query")
    sync = synchronize or (lambda: None)
    names = list(reranks)
    out: dict[str, dict[str, list[float]]] = {name: {p: [] for p in PARTS} for name in names}

    def once(name: str, query: str, timed: bool) -> None:
        rerank = reranks[name]
        sync()
        started = clock()
        candidates = retrieve(query)
        sync()
        retrieved = clock()
        if rerank is not None:
            rerank(query, candidates)
            sync()
        finished = clock()
        if timed:
            out[name]["total"].append((finished - started) * 1e3)
            out[name]["retrieval"].append((retrieved - started) * 1e3)
            out[name]["rerank"].append((finished - retrieved) * 1e3)
        if progress is not None:
            progress.update(1)

    for name in names:
        for i in range(warmup):
            once(name, queries[i % len(queries)], timed=False)
    for i in range(iterations):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            once(name, queries[i % len(queries)], timed=True)
    for name in names:
        if reranks[name] is None:
            del out[name]["rerank"]
    return out


def summarize(ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 (numpy's linear interpolation) and mean of `ms`, keyed "<stat>_ms"."""
    values = np.asarray(ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timings to summarize")
    out = {f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 95, 99)}
    out["mean_ms"] = float(values.mean())
    return out


def summarize_parts(parts: dict[str, list[float]]) -> dict[str, float]:
    """`summarize` of every part: end to end unprefixed, the others prefixed by their name."""
    out: dict[str, float] = {}
    for part, ms in parts.items():
        prefix = "" if part == "total" else f"{part}_"
        out.update({prefix + k: v for k, v in summarize(ms).items()})
    return out


# --------------------------------------------------------------------------------------------
# Devices and environment
# --------------------------------------------------------------------------------------------


def available_devices(requested: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(devices to measure, {skipped device: why}); CPU always runs, CUDA only if present."""
    devices, skipped = [], {}
    for device in dict.fromkeys(requested):
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                skipped[device] = "torch sees no CUDA device"
                log.info("latency: cuda skipped (torch sees no CUDA device)")
                continue
        devices.append(device)
    return devices, skipped


def library_versions() -> dict[str, str]:
    """Versions of the libraries on the measured path (absent ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            continue
    return out


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str) -> dict[str, Any]:
    """Name, threads and capabilities of `device` as this process sees it."""
    import torch

    info: dict[str, Any] = {
        "device": device,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_start": _loadavg(),
    }
    try:
        from rerank_sweeps.rerankers import cpu_has_fast_bf16

        info["cpu_fast_bf16"] = cpu_has_fast_bf16()
    except ImportError:  # pragma: no cover - rerankers is part of the package
        pass
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(
            {
                "gpu": torch.cuda.get_device_name(device),
                "gpu_capability": f"{props.major}.{props.minor}",
                "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "cuda": torch.version.cuda,
            }
        )
    return info


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------------------------
# One device, in its own process
# --------------------------------------------------------------------------------------------


def _release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def reusable_eval_scores(job: dict[str, Any], optimization: str) -> Path | None:
    """The evaluation's cached scores file when they are what `optimization` would compute.

    Evaluation scores every eval candidate once (the `scores` stage); re-scoring them here for
    the same model, device type and numerics would only repeat that work. fp32 matches scores
    made without autocast, `autocast` scores made with it; every other optimisation changes the
    numerics and is re-scored.
    """
    cached = job.get("eval_scores")
    if not cached or cached["device"] != job["device"].split(":")[0]:
        return None
    if (optimization == "fp32" and not cached["bf16"]) or (
        optimization == "autocast" and cached["bf16"]
    ):
        return Path(cached["path"])
    return None


def _accuracy(
    reranker: Any,
    system: str,
    items: list[Any],
    texts: dict[str, str],
    job: dict[str, Any],
    cached_scores: Path | None = None,
) -> dict[str, float]:
    """hit@k of `reranker` on the eval candidates, through evaluate's own functions.

    With `cached_scores` (a scores artifact dir, see `reusable_eval_scores`) the pairs' scores
    are read from it instead of being recomputed.
    """
    from rerank_sweeps import evaluate as ev

    if not items:
        return {}
    from rerank_sweeps.console import progress

    pairs = ev.unique_pairs(items, texts)
    if cached_scores is not None:
        found = artifact_at(cached_scores)
        if found is None:
            raise UserError(f"{cached_scores} is not a finished scores artifact")
        read = ev.read_scores(found[1], items, texts)
        flat = np.asarray([s for _, s in read], dtype=np.float32)
        log.info("latency: %s accuracy from the evaluation's cached scores", system)
    else:
        # Chunks of queries, so the bar moves; score_items keeps each chunk in one batched pass.
        scores: list[np.ndarray] = []
        desc = f"re-score eval candidates ({system})"
        with progress(total=len(items), desc=desc, unit="query") as bar:
            for start in range(0, len(items), ACCURACY_CHUNK):
                chunk = items[start : start + ACCURACY_CHUNK]
                scores.extend(ev.score_items(reranker, chunk, texts, system))
                bar.update(len(chunk))
        flat = np.concatenate(scores) if scores else np.empty(0, dtype=np.float32)
    reranker.prime(((items[n].question, texts[d]) for n, d in pairs), flat.tolist())
    out: dict[str, float] = {}
    try:
        for qt in job["query_types"]:
            for k in job["accuracy_ks"]:
                depth = job["depth_per_leg"][str(k)]
                hits = [
                    ev.query_metrics(
                        ev.reranked_ranking(reranker, it, qt, depth, texts), it.relevant, k
                    )["hit"]
                    for it in items
                ]
                out[f"{qt}-hit@{k}"] = ev.mean(hits)
    finally:
        reranker.clear_primed()
    return out


def _system_meta(reranker: Any, optimization: str) -> dict[str, Any]:
    """dtype, batch sizes and lengths of a loaded (and optimised) reranker."""
    from rerank_sweeps.speedups import model_dtype_summary

    meta: dict[str, Any] = {
        "optimization": optimization,
        "batch_size": reranker.batch_size,
        "max_length": reranker.meta.get("max_length"),
    }
    from rerank_sweeps.archs import get_arch

    for name in get_arch(reranker.meta.get("arch")).card_fields:
        meta[name] = reranker.meta.get(name)
    lean = getattr(reranker, "lean", None)
    # The lean scorers transform the reranker's own model object in place.
    meta["parameters"] = model_dtype_summary(reranker.model)
    meta["autocast_bf16"] = bool(reranker.bf16)
    if lean is not None:
        meta["scoring"] = "lean"
        meta["forward_batch_size"] = lean.batch_size
        meta["dtype"] = "int8-dynamic" if lean.opt.int8 else lean.opt.dtype
        runner = getattr(lean, "runner", None)
        if runner is not None:
            # The forward pass runs in the backend: its export, threads and numerics.
            meta["scoring"] = f"lean + {runner.backend}"
            meta["dtype"] = "int8-dynamic" if runner.backend.endswith("int8") else "fp32"
            meta["backend"] = {
                "name": runner.backend,
                "artifact": runner.artifact.key,
                "exported_now": not runner.artifact.hit,
                "threads": runner.threads,
                **{k: v for k, v in runner.meta.items() if k not in ("backend", "arch")},
            }
    else:
        meta["scoring"] = "reranker"
        meta["dtype"] = "bf16-autocast" if reranker.bf16 else "fp32"
    return meta


def measure_device(job: dict[str, Any]) -> dict[str, Any]:
    """Every system's latency and accuracy on `job["device"]` (run inside a fresh process)."""
    import torch

    from rerank_sweeps import evaluate as ev
    from rerank_sweeps.console import progress
    from rerank_sweeps.index import has_ann_index, load_embedder, open_table, read_corpus
    from rerank_sweeps.rerankers import load_reranker
    from rerank_sweeps.speedups import apply_optimization, system_name

    device = job["device"]
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    info = device_info(device)
    table = open_table(Path(job["index"]))
    ann = has_ann_index(table)
    embedder = load_embedder(job["embedder"], device)
    items = ev.load_items(Path(job["split"]), Path(job["candidates_artifact"]))
    latency_queries = [it.question for it in items[: job["queries"]]]
    accuracy_items = items if job["accuracy_queries"] is None else items[: job["accuracy_queries"]]
    ids, texts_list = read_corpus(Path(job["split"]))
    texts = dict(zip(ids, texts_list, strict=True))

    def retrieve_for(n: int) -> Callable[[str], Any]:
        def retrieve(query: str) -> Any:
            vec = embedder.encode(
                [query], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )[0]
            builder = (
                table.search(vec, vector_column_name="vector")
                .distance_type("dot")
                .select(["id", "text", "_distance"])
                .limit(n)
            )
            if ann:
                builder = builder.nprobes(job["ann_nprobes"])
                if job.get("ann_refine_factor"):
                    builder = builder.refine_factor(job["ann_refine_factor"])
            else:
                builder = builder.bypass_vector_index()
            return builder.to_arrow()

        return retrieve

    systems: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    runs_per_system = len(job["candidates"]) * (job["warmup"] + job["iterations"])
    bar = progress(
        total=runs_per_system * (1 + len(job["optimizations"])),
        desc=f"latency on {device}",
        unit="query",
    )
    # Every system is loaded first and timed interleaved with the others (time_systems), so
    # "none" meets the same conditions as the reranked rows instead of the process's cold start.
    systems[NONE] = {"latency": {}}
    loaded: dict[str, Any] = {}
    for optimization in job["optimizations"]:
        name = system_name(job["arch"], optimization)
        try:
            reranker = load_reranker(job["model"], device, False, job["batch_size"])
            apply_optimization(reranker, optimization, sort_batch_size=job["sort_batch_size"])
        except ConfigError as err:
            skipped[name] = str(err)
            log.info("latency: %s skipped on %s (%s)", name, device, err)
            bar.update(runs_per_system)
            continue
        entry: dict[str, Any] = {"latency": {}}
        cached = reusable_eval_scores(job, optimization)
        entry["accuracy"] = _accuracy(reranker, name, accuracy_items, texts, job, cached)
        entry["accuracy_source"] = "evaluation scores (cached)" if cached else "re-scored"
        lean = getattr(reranker, "lean", None)
        if device.startswith("cuda") and hasattr(lean, "warm_shapes"):
            # A GPU's first call of a new shape is slow (kernel choice, graph capture).
            entry["warm_shapes"] = lean.warm_shapes(job["candidates"])
        entry.update(_system_meta(reranker, optimization))
        systems[name] = entry
        loaded[name] = reranker
    for n in job["candidates"]:
        reranks: dict[str, Any] = {NONE: None}
        reranks.update({name: r.rerank_vector for name, r in loaded.items()})
        timed = time_systems(
            latency_queries, retrieve_for(n), reranks, job["warmup"], job["iterations"], sync, bar
        )
        for name, parts in timed.items():
            systems[name]["latency"][str(n)] = summarize_parts(parts)
    loaded.clear()
    _release(device)
    bar.close()
    info["loadavg_end"] = _loadavg()
    return {
        "info": info,
        "systems": systems,
        "skipped": skipped,
        "vector_search": "ann" if ann else "exact",
    }


def _child_main(argv: Sequence[str]) -> int:
    """`python -m rerank_sweeps.latency JOB OUT`: measure one device, write OUT (JSON)."""
    job_path, out_path = Path(argv[0]), Path(argv[1])
    from rerank_sweeps.console import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="[latency child] %(message)s")
    quiet_libraries()
    job = json.loads(job_path.read_text())
    try:
        result = measure_device(job)
    except (UserError, ConfigError) as err:
        out_path.write_text(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        return 1
    out_path.write_text(json.dumps(result))
    return 0


def run_device(job: dict[str, Any]) -> dict[str, Any]:
    """Measure one device in a fresh Python process and return its result."""
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "rerank_sweeps.latency", str(job_path), str(out_path)]
        proc = subprocess.run(cmd, check=False)
        result = json.loads(out_path.read_text()) if out_path.is_file() else None
    if result is None or "error" in result:
        why = result["error"] if result else f"the measuring process exited with {proc.returncode}"
        raise UserError(f"latency measurement on {job['device']} failed: {why}")
    return result


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
) -> dict[str, Any]:
    """The JSON job a measuring process runs (device added per process).

    `scores_art` is the evaluation's scores artifact for this model, reused for the accuracy
    of the optimisation whose numerics it matches (`reusable_eval_scores`).
    """
    from rerank_sweeps.evaluate import depth_for
    from rerank_sweeps.rerankers import read_reranker_meta
    from rerank_sweeps.speedups import parse_optimization

    lat = conf.latency
    opts = [parse_optimization(o).name for o in lat.optimizations]  # fails fast on bad names
    if "fp32" not in opts:
        opts.insert(0, "fp32")  # the reference every gain and accuracy change is measured against
    meta = read_reranker_meta(model_art.path)
    depth = json.loads((cand_art.path / "stats.json").read_text())["depth"]
    ks = accuracy_ks(conf, depth)
    return {
        # Absolute: the measuring process must not depend on the working directory.
        "split": str(Path(split_art.path).resolve()),
        "index": str(Path(index_art.path).resolve()),
        "candidates_artifact": str(Path(cand_art.path).resolve()),
        "model": str(Path(model_art.path).resolve()),
        "arch": meta["arch"],
        "embedder": conf.index.embedder,
        "ann_nprobes": getattr(conf.index, "ann_nprobes", None),
        "ann_refine_factor": getattr(conf.index, "ann_refine_factor", None),
        "candidates": list(dict.fromkeys(lat.candidates)),
        "warmup": lat.warmup,
        "iterations": lat.iterations,
        "queries": lat.queries,
        "optimizations": list(dict.fromkeys(opts)),
        "threads": lat.threads,
        "batch_size": lat.batch_size,
        "sort_batch_size": lat.sort_batch_size,
        "accuracy_queries": lat.accuracy_queries,
        "accuracy_ks": ks,
        "query_types": list(conf.query_type.types),
        # Candidates per leg for each k, as the evaluation reranks them (eval.depth rule).
        "depth_per_leg": {str(k): depth_for(conf, k) for k in ks},
        "eval_scores": _eval_scores_info(scores_art),
    }


def _eval_scores_info(scores_art: Artifact | None) -> dict[str, Any] | None:
    if scores_art is None:
        return None
    stats = json.loads((Path(scores_art.path) / "stats.json").read_text())
    return {
        "path": str(Path(scores_art.path).resolve()),
        "device": str(stats["device"]).split(":")[0],
        "bf16": bool(stats["bf16"]),
    }


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
    reference = system_name(job["arch"], "fp32")
    flag_keys = [f"{qt}-hit@{conf.latency.flag_k}" for qt in job["query_types"]]
    results: dict[str, dict[str, Any]] = {}
    for device in devices:
        log.info("latency: measuring on %s in a fresh process", device)
        result = run_device({**job, "device": device})
        compare_to_reference(result, reference, flag_keys, conf.latency.max_hit_drop)
        results[device] = result
    report = {
        "protocol": {
            "retrieval": "query embedding (conf.index.embedder, on the device) + LanceDB vector "
            "search with limit N, selecting id and text",
            "rerank": "reranker.rerank_vector(query, the N rows): LanceDB's Reranker interface",
            "timer": "time.perf_counter; torch.cuda.synchronize before and after each part on GPU",
            "candidates": job["candidates"],
            "warmup": job["warmup"],
            "iterations": job["iterations"],
            "queries": job["queries"],
            "percentiles": "numpy linear interpolation over the timed iterations",
            "accuracy": "hit@k re-scored on the eval candidates (candidates artifact), "
            f"{'all' if job['accuracy_queries'] is None else job['accuracy_queries']} queries",
            "flag": f"hit@{conf.latency.flag_k} drop > {conf.latency.max_hit_drop} vs fp32",
            "isolation": "one fresh Python process per device",
        },
        "config": asdict(conf.latency),
        "model": {"artifact": model_art.key, "arch": job["arch"], "path": job["model"]},
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


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
