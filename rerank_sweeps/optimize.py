"""Installing an inference optimisation (`speedups`) on a loaded reranker.

`apply_optimization` sits above the architectures (each builds its own lean scorer) and the
inference backends (an exported model's runner replaces the lean scorer's forward pass), so
that `speedups`, which both of them use, stays below them.
"""

from __future__ import annotations

from typing import Any

from rerank_sweeps.archs import get_arch
from rerank_sweeps.backends import load_runner
from rerank_sweeps.config import ConfigError
from rerank_sweeps.speedups import Optimization, parse_optimization, unsupported_reason


def apply_optimization(
    reranker: Any,
    optimization: str | Optimization,
    *,
    batch_size: int | None = None,
    sort_batch_size: int = 16,
    cache: Any = None,
) -> Any:
    """Install `optimization` on a loaded `rerankers.ModelReranker` (in place) and return it.

    The reranker must have been loaded with bf16=False. fp32 leaves it untouched; autocast
    switches on its own bf16 autocast; everything else replaces its `_score_pairs` with a lean
    scorer (`reranker.lean`) built around the reranker's own model object. For a backend the
    lean scorer's forward pass is the backend's runner (`reranker.lean.runner`), exported into
    `cache` (a `cache.Cache`; default: the cache holding the model artifact) on first use.
    """
    opt = (
        optimization if isinstance(optimization, Optimization) else parse_optimization(optimization)
    )
    reason = unsupported_reason(opt, reranker.device)
    if reason is not None:
        raise ConfigError(
            f"latency.optimizations={opt.name!r} cannot run on {reranker.device}: {reason}"
        )
    reranker.optimization = opt.name
    if opt.reference:
        reranker.bf16 = False
        return reranker
    if opt.autocast:
        reranker.bf16 = True
        return reranker
    reranker.bf16 = False  # the lean scorer sets its own dtype; no autocast on top
    arch = get_arch(reranker.meta.get("arch"))
    if opt.graphs and not arch.supports_graphs:
        raise ConfigError(
            f"latency.optimizations={opt.name!r}: CUDA graphs are implemented for the "
            f"cross-encoder only ({arch.title}'s forward is not captured)"
        )
    batch = int(batch_size or reranker.batch_size)
    lean = arch.lean_scorer(reranker.model, reranker.device, opt, batch, sort_batch_size)
    if opt.backend is not None:
        runner = load_runner(
            reranker.model, arch.name, reranker.model_dir.parent, opt.backend, cache=cache
        )
        # Tokenising, batching, sorting and the score conventions stay the lean scorer's.
        lean.forward = arch.runner_forward(runner)
        lean.runner = runner
    reranker.lean = lean
    # An instance attribute shadows the class method: score_pairs -> _score_pairs -> lean.
    reranker._score_pairs = lean
    return reranker
