"""Inference speed-ups for our rerankers, switched on by name (`conf.latency.optimizations`).

An optimisation name is one token or several joined by "+":

- `fp32`: the reference. The reranker exactly as `rerankers.load_reranker(..., bf16=False)`
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
weights, length-sorted micro-batches. `apply_optimization(reranker, ...)` installs the lean
path on a loaded `rerankers.ModelReranker` by replacing its `_score_pairs` on the instance, so
every LanceDB entry point (`rerank_vector`, `rerank_fts`, `rerank_hybrid`, `score`) uses it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
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


def check_optimization(name: str) -> Optimization:
    """`parse_optimization`, plus a one-line ConfigError when a backend's packages are missing
    (config validation: before anything trains)."""
    opt = parse_optimization(name)
    if opt.backend is not None:
        from rerank_sweeps.backends import missing_packages

        missing = missing_packages(opt.backend)
        if missing:
            raise ConfigError(
                f"latency.optimizations={name!r} needs {', '.join(missing)}: "
                "pip install -e '.[backends]' (make setup installs them)"
            )
    return opt


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


def _pad_width(width: int, multiple: int) -> int:
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


class LeanCrossEncoder:
    """Score (query, text) pairs with a sentence-transformers CrossEncoder at low overhead.

    Scores equal `rerankers.CrossEncoderReranker`'s (raw logit; log-probability of the last
    class for a classifier head) up to floating-point rounding.
    """

    def __init__(
        self,
        cross_encoder: Any,
        device: str,
        opt: Optimization,
        batch_size: int,
        sort_batch_size: int,
    ) -> None:
        self.tokenizer = cross_encoder.tokenizer
        self.max_length = int(cross_encoder.max_length or min(self.tokenizer.model_max_length, 512))
        self.device = device
        self.opt = opt
        self.batch_size = int(sort_batch_size if opt.sort else batch_size)
        self.model = transform_module(cross_encoder.model, opt, device)
        self.forward = maybe_compile(self.model, opt)
        self.multiple = (
            GRAPH_PAD_MULTIPLE if opt.graphs else COMPILE_PAD_MULTIPLE if opt.compile else 1
        )
        # (rows, width) -> (graph, static inputs, static logits); filled by _graph_logits.
        self.graphs: dict[tuple[int, int], tuple[Any, dict[str, Any], Any]] = {}
        self.graph_pool: Any = None

    def _graph_logits(self, batch: dict[str, Any]) -> Any:
        """Logits of `batch` by replaying the CUDA graph of its shape (captured on first use)."""
        import torch

        key = tuple(batch["input_ids"].shape)
        if key not in self.graphs:
            static = {k: v.clone() for k, v in batch.items()}
            # Capture needs a warmed-up side stream (cuBLAS handles, lazy inits) first.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.model(**static, return_dict=True)
            torch.cuda.current_stream().wait_stream(side)
            if self.graph_pool is None:
                self.graph_pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.graph_pool):
                logits = self.model(**static, return_dict=True).logits
            self.graphs[key] = (graph, static, logits)
        graph, static, logits = self.graphs[key]
        for k, v in batch.items():
            static[k].copy_(v)
        graph.replay()
        return logits

    @property
    def max_width(self) -> int:
        """The widest padded batch: max_length padded, never past the model's position table."""
        positions = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return min(_pad_width(self.max_length, self.multiple), int(positions or 10**9))

    def chunk_sizes(self, n: int) -> list[int]:
        """The distinct batch row counts that scoring `n` pairs produces."""
        return sorted({len(idx) for idx in chunks(np.zeros(n), self.batch_size, self.opt.sort)})

    def warm_shapes(self, counts: Sequence[int]) -> int:
        """Run (and for `graphs`, capture) every batch shape that scoring `counts` pairs can
        produce, so no timed call meets a new shape; returns how many shapes were run.

        Widths are every padded width up to `max_length` (every width when nothing pads);
        rows the chunk sizes of each count. Timings after this meet only shapes that have
        already run once (cuBLAS heuristics, allocator blocks and graphs included). Meant for
        GPUs, where a new shape costs a visible first call.
        """
        import torch

        sample = self.tokenizer(["q"], ["t"], return_tensors="pt")
        step = max(self.multiple, 1)
        widths = sorted(set(range(step, self.max_width + 1, step)) | {self.max_width})
        rows = sorted({r for n in counts for r in self.chunk_sizes(int(n))})
        with torch.inference_mode():
            for r in rows:
                for w in widths:
                    batch = {
                        k: torch.zeros((r, w), dtype=v.dtype, device=self.device)
                        for k, v in sample.items()
                    }
                    batch["attention_mask"] += 1
                    batch["input_ids"] += int(self.tokenizer.cls_token_id or 0)
                    self._logits(batch)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return len(rows) * len(widths)

    def _logits(self, batch: dict[str, Any]) -> Any:
        if self.opt.graphs:
            return self._graph_logits(batch)
        return self.forward(**batch, return_dict=True).logits

    def __call__(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Scores of the pairs (queries[i], texts[i]) as float32."""
        import torch

        if not len(queries):
            return np.empty(0, dtype=np.float32)
        # One tokenizer call for all pairs; batches are slices trimmed to their longest row.
        enc = self.tokenizer(
            list(queries),
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        lengths = enc["attention_mask"].sum(dim=1).numpy()
        # Room for every padded width (the tokenizer refuses to pad past its truncation length
        # to a multiple); the extra columns are pad tokens under a zero attention mask.
        full = min(_pad_width(enc["input_ids"].shape[1], self.multiple), self.max_width)
        if full > enc["input_ids"].shape[1]:
            extra = full - enc["input_ids"].shape[1]
            pad_id = int(self.tokenizer.pad_token_id or 0)
            enc = {
                k: torch.nn.functional.pad(v, (0, extra), value=pad_id if k == "input_ids" else 0)
                for k, v in enc.items()
            }
        enc = {k: v.to(self.device, non_blocking=True) for k, v in enc.items()}
        out = torch.empty(len(queries), dtype=torch.float32)
        with torch.inference_mode():
            for idx in chunks(lengths, self.batch_size, self.opt.sort):
                width = min(
                    _pad_width(int(lengths[idx].max()), self.multiple), enc["input_ids"].shape[1]
                )
                rows = torch.as_tensor(idx, device=self.device)
                batch = {k: v.index_select(0, rows)[:, :width] for k, v in enc.items()}
                logits = self._logits(batch).float()
                if logits.shape[-1] == 1:
                    scores = logits[:, 0]
                else:  # same convention as rerankers.CrossEncoderReranker
                    scores = torch.log_softmax(logits, dim=-1)[:, -1]
                out[torch.as_tensor(idx)] = scores.cpu()
        return out.numpy()


class LeanColBERT:
    """Score (query, text) pairs with a PyLate ColBERT (MaxSim) at low overhead.

    Tokenisation is PyLate's own (`ColBERT.tokenize`: prefix tokens, query expansion), and the
    masks are PyLate's (queries: every token under query expansion; documents: attention mask
    minus the punctuation skiplist), so scores equal `rerankers.ColBERTReranker`'s up to
    rounding. Each unique query and text is encoded once per call.
    """

    def __init__(
        self, colbert: Any, device: str, opt: Optimization, batch_size: int, sort_batch_size: int
    ) -> None:
        import torch

        self.colbert = colbert
        self.device = device
        self.opt = opt
        self.batch_size = int(sort_batch_size if opt.sort else batch_size)
        self.skiplist = torch.tensor(sorted(set(colbert.skiplist)), dtype=torch.long, device=device)
        transform_module(colbert, opt, device)  # in place: PyLate's tokenize/forward stay
        self.forward = maybe_compile(colbert.forward, opt)

    def _encode(self, texts: list[str], is_query: bool) -> tuple[Any, Any]:
        """Normalised token embeddings (n, L, D) in float32 and the MaxSim mask (n, L)."""
        import torch

        features = self.colbert.tokenize(texts, is_query=is_query)
        lengths = features["attention_mask"].sum(dim=1).numpy()
        features = {k: v.to(self.device, non_blocking=True) for k, v in features.items()}
        width_all = features["input_ids"].shape[1]
        dim = self.colbert.get_sentence_embedding_dimension() or 0
        embeddings: Any = None
        multiple = COMPILE_PAD_MULTIPLE if self.opt.compile else 1
        # Queries have one fixed (expanded) length: no sorting or trimming to gain.
        sort = self.opt.sort and not is_query
        for idx in chunks(lengths, self.batch_size, sort):
            width = (
                width_all
                if is_query
                else min(_pad_width(int(lengths[idx].max()), multiple), width_all)
            )
            rows = torch.as_tensor(idx, device=self.device)
            batch = {k: v.index_select(0, rows)[:, :width] for k, v in features.items()}
            tokens = self.forward(batch)["token_embeddings"].float()
            if embeddings is None:
                dim = tokens.shape[-1]
                embeddings = torch.zeros(len(texts), width_all, dim, device=self.device)
            embeddings[rows, :width] = tokens
        embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=-1)
        if is_query and self.colbert.do_query_expansion:
            mask = torch.ones_like(features["input_ids"], dtype=torch.bool)
        else:
            mask = features["attention_mask"].bool()
            if not is_query:
                mask &= ~torch.isin(features["input_ids"], self.skiplist)
        return embeddings, mask

    def __call__(self, queries: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Scores of the pairs (queries[i], texts[i]) as float32."""
        import torch

        if not len(queries):
            return np.empty(0, dtype=np.float32)
        unique_q = list(dict.fromkeys(queries))
        unique_t = list(dict.fromkeys(texts))
        q_pos = {q: i for i, q in enumerate(unique_q)}
        t_pos = {t: i for i, t in enumerate(unique_t)}
        out = np.empty(len(queries), dtype=np.float32)
        with torch.inference_mode():
            q_emb, q_mask = self._encode(unique_q, is_query=True)
            d_emb, d_mask = self._encode(unique_t, is_query=False)
            by_query: dict[int, list[int]] = {}
            for i, q in enumerate(queries):
                by_query.setdefault(q_pos[q], []).append(i)
            for qi, rows in by_query.items():
                docs = torch.as_tensor([t_pos[texts[i]] for i in rows], device=self.device)
                q = q_emb[qi][q_mask[qi]]  # (Lq, D)
                sim = torch.einsum("qd,nld->nql", q, d_emb[docs])
                sim = sim.masked_fill(~d_mask[docs][:, None, :], float("-inf"))
                out[rows] = sim.max(dim=2).values.sum(dim=1).cpu().numpy()
        return out


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
    arch = reranker.meta.get("arch")
    batch = int(batch_size or reranker.batch_size)
    if arch == "ce":
        lean: Any = LeanCrossEncoder(reranker.model, reranker.device, opt, batch, sort_batch_size)
    elif arch == "colbert" and opt.graphs:
        raise ConfigError(
            f"latency.optimizations={opt.name!r}: CUDA graphs are implemented for the "
            "cross-encoder only (ColBERT's PyLate forward is not captured)"
        )
    elif arch == "colbert":
        lean = LeanColBERT(reranker.model, reranker.device, opt, batch, sort_batch_size)
    else:
        raise ConfigError(f"latency.optimizations={opt.name!r}: no lean path for arch {arch!r}")
    if opt.backend is not None:
        from rerank_sweeps.backends import load_runner

        runner = load_runner(
            reranker.model, arch, reranker.model_dir.parent, opt.backend, cache=cache
        )
        # Tokenising, batching, sorting and the score conventions stay the lean scorer's.
        lean.forward = runner.hf_forward if arch == "ce" else runner.st_forward
        lean.runner = runner
    reranker.lean = lean
    # An instance attribute shadows the class method: score_pairs -> _score_pairs -> lean.
    reranker._score_pairs = lean
    return reranker


def model_dtype_summary(module: Any) -> dict[str, int]:
    """Parameter counts per dtype plus the number of dynamically quantised Linear layers."""
    import torch

    counts: dict[str, int] = {}
    for p in module.parameters():
        key = str(p.dtype).replace("torch.", "")
        counts[key] = counts.get(key, 0) + p.numel()
    quantised = sum(
        1 for m in module.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
    )
    if quantised:
        counts["int8_linear_layers"] = quantised
    return counts
