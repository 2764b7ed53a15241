"""Inference speed-ups for our rerankers, switched on by name (`conf.latency.optimizations`).

An optimisation name is one token or several joined by "+":

- `fp32`: the reference. The reranker exactly as `archs.load_reranker(..., bf16=False)`
  returns it: the path evaluation runs, in float32. Must stand alone.
- `autocast`: the reranker's own bf16 autocast (`load_reranker(..., bf16=True)`), which is what
  `eval.bf16=auto` picks on a CPU or GPU with fast bf16.
- `lean`: our lean scoring path in float32 (below): tokenise every pair once, pad each batch
  only to its own longest row, run the model under `torch.inference_mode`, no per-call
  `.to(device)`, progress bars or per-score conversions.
- `bf16`, `fp16`: the lean path with the weights kept in that dtype (no per-call casts, as
  autocast does). fp16 is for GPUs; on a CPU it is refused (slow, partly unsupported kernels).
- `int8`: the lean path with `torch.ao` dynamic int8 quantisation of the transformer's
  `nn.Linear` layers (the scoring head stays float32; CPU only: fbgemm/oneDNN CPU kernels).
- `sort`: sort the pairs by token length and score them in micro-batches of
  `sort_batch_size`, so that short pairs are not padded to the longest one.
- `compile`: `torch.compile` the model (dynamic shapes; sequence lengths padded to a multiple
  of 8 to bound recompilation). Its first calls are slow: the warm-up absorbs them.
- `graphs` (cross-encoder on CUDA): every batch shape is captured once as a CUDA graph and
  replayed, so a query costs a few launches instead of one per kernel (a 6-layer MiniLM is
  launch-bound on a GPU). Sequence lengths are padded to a multiple of 32 so the shapes are
  few; `warm_shapes` captures them all before timing.
- `onnx`, `onnx-o3`, `onnx-int8`, `openvino` (CPU): the lean path with the model's forward
  pass run by ONNX Runtime (plain, transformer-fused at optimum's O3 level, dynamic int8 with
  the AVX512-VNNI settings) or OpenVINO, from an export cached beside the model artifact; see
  `rerank_sweeps.backends`. One backend at most, combinable with `sort` only.

Any name other than `fp32` and `autocast` implies `lean`, so `bf16+sort` = lean path, bf16
weights, length-sorted micro-batches. `optimize.apply_optimization(reranker, ...)` installs
the lean path on a loaded `rerankers.ModelReranker` by replacing its `_score_pairs` on the
instance, so every LanceDB entry point (`rerank_vector`, `rerank_fts`, `rerank_hybrid`,
`score`) uses it. This module is the low layer (names, parsing, torch transforms) that the
architectures' lean scorers and `backends` build on; config validation checks the names with
`validation.check_optimization`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from rerank_sweeps.config import ConfigError

log = logging.getLogger(__name__)

# Inference backends (rerank_sweeps.backends): the forward pass leaves torch.
BACKENDS = ("onnx", "onnx-o3", "onnx-int8", "openvino")
TOKENS = ("fp32", "autocast", "lean", "bf16", "fp16", "int8", "sort", "compile", "graphs")
TOKENS += BACKENDS
DTYPES = ("bf16", "fp16")
COMPILE_PAD_MULTIPLE = 8
# Few distinct widths keep the set of CUDA graphs (one per batch shape) small enough to capture
# them all in the warm-up; 32 tokens of padding cost little on a GPU.
GRAPH_PAD_MULTIPLE = 32


@dataclass(frozen=True)
class Optimization:
    """One parsed optimisation name (see the module docstring for the tokens)."""

    name: str
    dtype: str = "fp32"  # weights and activations: fp32 | bf16 | fp16
    autocast: bool = False
    int8: bool = False
    sort: bool = False
    compile: bool = False
    graphs: bool = False
    backend: str | None = None  # one of BACKENDS: the forward pass runs there, not in torch

    @property
    def reference(self) -> bool:
        """Whether this is the unmodified float32 reranker."""
        return self.name == "fp32"

    @property
    def lean(self) -> bool:
        """Whether scoring goes through our lean path (everything but fp32 and autocast)."""
        return not self.reference and not self.autocast


def parse_optimization(name: str) -> Optimization:
    """Parse `name` ("bf16", "int8+sort", ...) or raise a one-line ConfigError."""
    tokens = [t.strip().lower() for t in str(name).split("+")]
    allowed = "one of " + ", ".join(TOKENS) + ", or several joined by '+' (e.g. bf16+sort)"
    for t in tokens:
        if t not in TOKENS:
            raise ConfigError(f"latency.optimizations={name!r} is not allowed: {allowed}")
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"latency.optimizations={name!r} is not allowed: a token is repeated")
    if len(tokens) > 1 and ("fp32" in tokens or "autocast" in tokens):
        raise ConfigError(
            f"latency.optimizations={name!r} is not allowed: fp32 and autocast stand alone"
        )
    dtypes = [t for t in tokens if t in DTYPES]
    if len(dtypes) > 1 or (dtypes and "int8" in tokens):
        raise ConfigError(
            f"latency.optimizations={name!r} is not allowed: choose one of bf16, fp16, int8"
        )
    backends = [t for t in tokens if t in BACKENDS]
    if backends and (len(backends) > 1 or set(tokens) - {backends[0], "sort"}):
        raise ConfigError(
            f"latency.optimizations={name!r} is not allowed: a backend "
            f"({', '.join(BACKENDS)}) combines only with sort"
        )
    return Optimization(
        name="+".join(tokens),
        dtype=dtypes[0] if dtypes else "fp32",
        autocast=tokens == ["autocast"],
        int8="int8" in tokens,
        sort="sort" in tokens,
        compile="compile" in tokens,
        graphs="graphs" in tokens,
        backend=backends[0] if backends else None,
    )


def system_name(arch: str, optimization: str) -> str:
    """The latency key's system: the arch for fp32, else "<arch>+<optimisation>"."""
    opt = parse_optimization(optimization)
    return arch if opt.reference else f"{arch}+{opt.name}"


def unsupported_reason(opt: Optimization, device: str) -> str | None:
    """Why `opt` cannot run on `device` (a sentence), or None when it can."""
    kind = device.split(":")[0]
    if opt.backend is not None and kind != "cpu":
        return f"the {opt.backend} backend runs on the CPU only (ONNX Runtime / OpenVINO CPU)"
    if opt.int8 and kind != "cpu":
        return "int8 dynamic quantisation has CPU kernels only"
    if opt.graphs and kind != "cuda":
        return "CUDA graphs need a CUDA device"
    if opt.graphs and opt.compile:
        return "graphs and compile both capture the model: choose one"
    if opt.dtype == "fp16" and kind == "cpu":
        return "fp16 is a GPU optimisation (CPU fp16 kernels are slow or missing)"
    if kind == "cuda":
        import torch

        if opt.dtype == "bf16" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16 support"
    if (
        opt.compile
        and kind == "cpu"
        and shutil.which("g++") is None
        and shutil.which("c++") is None
    ):
        return "torch.compile on CPU needs a C++ compiler (none on PATH)"
    return None


def torch_dtype(name: str) -> Any:
    """The torch dtype of "fp32" | "bf16" | "fp16"."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def chunks(lengths: np.ndarray, batch_size: int, sort: bool) -> list[np.ndarray]:
    """Row indices per batch: input order, or longest-first when `sort` (less padding)."""
    order = np.argsort(-lengths, kind="stable") if sort else np.arange(len(lengths))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_width(width: int, multiple: int) -> int:
    """`width` rounded up to a multiple of `multiple` (unchanged for multiple <= 1)."""
    return width if multiple <= 1 else -(-width // multiple) * multiple


# Linear layers that produce the score itself stay in float32 under int8: quantising the
# one-logit classifier, BERT's pooler or ColBERT's projection costs accuracy for no speed.
HEAD_NAMES = frozenset({"classifier", "pooler", "score", "head", "dense_layer"})


def backbone_linear_names(module: Any) -> list[str]:
    """Names of the nn.Linear layers int8 quantises: the transformer's, not the scoring head's.

    For a sentence-transformers model (PyLate's ColBERT) only its first module (the
    transformer) counts; its Dense projection is a head.
    """
    import torch

    names = []
    for name, sub in module.named_modules():
        if not isinstance(sub, torch.nn.Linear):
            continue
        parts = name.split(".")
        if HEAD_NAMES & set(parts):
            continue
        if hasattr(module, "_first_module") and parts[0] != "0":
            continue
        names.append(name)
    return names


def transform_module(module: Any, opt: Optimization, device: str) -> Any:
    """`module` cast to the optimisation's dtype or int8-quantised, in place."""
    import torch

    module.eval()
    if opt.int8:
        # Dynamic quantisation: int8 weights, activations quantised per batch on the fly.
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        spec = {name: qconfig for name in backbone_linear_names(module)}
        return torch.ao.quantization.quantize_dynamic(module, spec, dtype=torch.qint8, inplace=True)
    if opt.dtype != "fp32":
        module.to(torch_dtype(opt.dtype))
    return module


def maybe_compile(fn: Any, opt: Optimization) -> Any:
    """`torch.compile(fn, dynamic=True)` for the compile optimisation, else `fn`."""
    if not opt.compile:
        return fn
    import torch

    return torch.compile(fn, dynamic=True)


def model_dtype_summary(module: Any) -> dict[str, int]:
    """Parameter counts per dtype plus the number of dynamically quantised Linear layers
    ({} for a model that is no torch module, as an architecture's may be)."""
    import torch

    counts: dict[str, int] = {}
    if not isinstance(module, torch.nn.Module):
        return counts
    for p in module.parameters():
        key = str(p.dtype).replace("torch.", "")
        counts[key] = counts.get(key, 0) + p.numel()
    quantised = sum(
        1 for m in module.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
    )
    if quantised:
        counts["int8_linear_layers"] = quantised
    return counts
