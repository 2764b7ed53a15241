"""One device's latency and accuracy, measured in a fresh process.

`run_device(job)` starts `python -m rerank_sweeps.latency_device JOB OUT`, so no GPU memory,
compiled kernels, thread settings or caches leak between devices; `measure_device(job)` is
what runs there: every system (none, the reranker in fp32, each optimisation) timed with
`timing`, and each reranker's accuracy on the eval candidates. The job is a `LatencyJob`,
written to the child as JSON and read back into the same type there.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rerank_sweeps.cache import artifact_at
from rerank_sweeps.config import ConfigError, UserError
from rerank_sweeps.machine import device_info, loadavg
from rerank_sweeps.timing import summarize_parts, time_systems

log = logging.getLogger(__name__)

NONE = "none"
ACCURACY_CHUNK = 32  # eval queries re-scored per batched pass


@dataclass(frozen=True)
class EvalScoresRef:
    """The evaluation's scores artifact for the measured model, and the numerics it used."""

    path: str
    device: str  # device type: cpu | cuda
    bf16: bool


@dataclass(frozen=True)
class LatencyJob:
    """What one measuring process needs; every path absolute (the child's working directory
    must not matter). Built by `latency.build_job`, one copy per device (`for_device`)."""

    split: str
    index: str
    candidates_artifact: str
    model: str
    arch: str
    embedder: str
    candidates: tuple[int, ...]
    warmup: int
    iterations: int
    queries: int
    optimizations: tuple[str, ...]  # "fp32" first: the reference of every speed-up
    batch_size: int
    sort_batch_size: int
    accuracy_queries: int | None  # None: every eval query
    accuracy_ks: tuple[int, ...]
    query_types: tuple[str, ...]
    depth_per_leg: dict[int, int] = field(default_factory=dict)  # candidates per leg, per k
    eval_scores: EvalScoresRef | None = None
    threads: int | None = None
    ann_nprobes: int | None = None
    ann_refine_factor: int | None = None
    # "module:Class" of the architecture and its module's file: one registered at run time
    # (`archs.register`) rather than listed in archs.ARCHITECTURES is registered again in
    # the fresh process, from the file when its module is not importable there.
    arch_class: str | None = None
    arch_file: str | None = None
    device: str = "cpu"

    def for_device(self, device: str) -> LatencyJob:
        """This job on `device`."""
        return replace(self, device=device)

    def to_json(self) -> str:
        """The job as JSON (the file the child process reads)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LatencyJob:
        """The job `to_json` wrote; JSON's lists and string keys back to tuples and ints."""
        raw = json.loads(text)
        scores = raw.pop("eval_scores", None)
        return cls(
            **{
                **raw,
                "candidates": tuple(raw["candidates"]),
                "optimizations": tuple(raw["optimizations"]),
                "accuracy_ks": tuple(raw["accuracy_ks"]),
                "query_types": tuple(raw["query_types"]),
                "depth_per_leg": {int(k): int(v) for k, v in raw["depth_per_leg"].items()},
            },
            eval_scores=EvalScoresRef(**scores) if scores else None,
        )


def register_job_arch(job: LatencyJob) -> None:
    """Register the job's architecture in this process when it was registered at run time."""
    from rerank_sweeps.archs import ARCHITECTURES, register

    if job.arch in ARCHITECTURES or not job.arch_class:
        return
    module_name, _, name = job.arch_class.partition(":")
    if job.arch_file and importlib.util.find_spec(module_name.partition(".")[0]) is None:
        # Not importable here (e.g. a test module or a script): its folder goes on the path, as
        # it was for the process that registered it.
        root = Path(job.arch_file).parent
        for _ in range(module_name.count(".")):
            root = root.parent
        sys.path.insert(0, str(root))
    module = importlib.import_module(module_name)
    register(getattr(module, name)())


def _release(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def reusable_eval_scores(job: LatencyJob, optimization: str) -> Path | None:
    """The evaluation's cached scores file when they are what `optimization` would compute.

    Evaluation scores every eval candidate once (the `scores` stage); re-scoring them here for
    the same model, device type and numerics would only repeat that work. fp32 matches scores
    made without autocast, `autocast` scores made with it; every other optimisation changes the
    numerics and is re-scored.
    """
    cached = job.eval_scores
    if cached is None or cached.device != job.device.split(":")[0]:
        return None
    if (optimization == "fp32" and not cached.bf16) or (optimization == "autocast" and cached.bf16):
        return Path(cached.path)
    return None


def _accuracy(
    reranker: Any,
    system: str,
    items: list[Any],
    texts: dict[str, str],
    job: LatencyJob,
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
        for qt in job.query_types:
            for k in job.accuracy_ks:
                depth = job.depth_per_leg[k]
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


def measure_device(job: LatencyJob) -> dict[str, Any]:
    """Every system's latency and accuracy on `job.device` (run inside a fresh process)."""
    import torch

    from rerank_sweeps import evaluate as ev
    from rerank_sweeps.archs import load_reranker
    from rerank_sweeps.console import progress
    from rerank_sweeps.index import has_ann_index, load_embedder, open_table, read_corpus
    from rerank_sweeps.optimize import apply_optimization
    from rerank_sweeps.speedups import system_name

    device = job.device
    if job.threads:
        torch.set_num_threads(job.threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    info = device_info(device)
    table = open_table(Path(job.index))
    ann = has_ann_index(table)
    embedder = load_embedder(job.embedder, device)
    items = ev.load_items(Path(job.split), Path(job.candidates_artifact))
    latency_queries = [it.question for it in items[: job.queries]]
    accuracy_items = items if job.accuracy_queries is None else items[: job.accuracy_queries]
    ids, texts_list = read_corpus(Path(job.split))
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
                builder = builder.nprobes(job.ann_nprobes)
                if job.ann_refine_factor:
                    builder = builder.refine_factor(job.ann_refine_factor)
            else:
                builder = builder.bypass_vector_index()
            return builder.to_arrow()

        return retrieve

    systems: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    runs_per_system = len(job.candidates) * (job.warmup + job.iterations)
    bar = progress(
        total=runs_per_system * (1 + len(job.optimizations)),
        desc=f"latency on {device}",
        unit="query",
    )
    # Every system is loaded first and timed interleaved with the others (time_systems), so
    # "none" meets the same conditions as the reranked rows instead of the process's cold start.
    systems[NONE] = {"latency": {}}
    loaded: dict[str, Any] = {}
    for optimization in job.optimizations:
        name = system_name(job.arch, optimization)
        try:
            reranker = load_reranker(job.model, device, False, job.batch_size)
            apply_optimization(reranker, optimization, sort_batch_size=job.sort_batch_size)
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
            entry["warm_shapes"] = lean.warm_shapes(list(job.candidates))
        entry.update(_system_meta(reranker, optimization))
        systems[name] = entry
        loaded[name] = reranker
    for n in job.candidates:
        reranks: dict[str, Any] = {NONE: None}
        reranks.update({name: r.rerank_vector for name, r in loaded.items()})
        timed = time_systems(
            latency_queries, retrieve_for(n), reranks, job.warmup, job.iterations, sync, bar
        )
        for name, parts in timed.items():
            systems[name]["latency"][str(n)] = summarize_parts(parts)
    loaded.clear()
    _release(device)
    bar.close()
    info["loadavg_end"] = loadavg()
    return {
        "info": info,
        "systems": systems,
        "skipped": skipped,
        "vector_search": "ann" if ann else "exact",
    }


def _child_main(argv: Sequence[str]) -> int:
    """`python -m rerank_sweeps.latency_device JOB OUT`: measure one device, write OUT (JSON)."""
    job_path, out_path = Path(argv[0]), Path(argv[1])
    from rerank_sweeps.console import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="[latency child] %(message)s")
    quiet_libraries()
    job = LatencyJob.from_json(job_path.read_text())
    try:
        register_job_arch(job)
        result = measure_device(job)
    except (UserError, ConfigError) as err:
        out_path.write_text(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        return 1
    out_path.write_text(json.dumps(result))
    return 0


def run_device(job: LatencyJob) -> dict[str, Any]:
    """Measure `job.device` in a fresh Python process and return its result."""
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(job.to_json())
        cmd = [sys.executable, "-m", "rerank_sweeps.latency_device", str(job_path), str(out_path)]
        proc = subprocess.run(cmd, check=False)
        result = json.loads(out_path.read_text()) if out_path.is_file() else None
    if result is None or "error" in result:
        why = result["error"] if result else f"the measuring process exited with {proc.returncode}"
        raise UserError(f"latency measurement on {job.device} failed: {why}")
    return result


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
