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

TOKENS = ("fp32", "autocast", "lean", "bf16", "fp16", "int8", "sort", "compile")
DTYPES = ("bf16", "fp16")
COMPILE_PAD_MULTIPLE = 8


@dataclass(frozen=True)
class Optimization:
    """One parsed optimisation name (see the module docstring for the tokens)."""

    name: str
    dtype: str = "fp32"  # weights and activations: fp32 | bf16 | fp16
    autocast: bool = False
    int8: bool = False
    sort: bool = False
    compile: bool = False

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
    return Optimization(
        name="+".join(tokens),
        dtype=dtypes[0] if dtypes else "fp32",
        autocast=tokens == ["autocast"],
        int8="int8" in tokens,
        sort="sort" in tokens,
        compile="compile" in tokens,
    )


def system_name(arch: str, optimization: str) -> str:
    """The latency key's system: the arch for fp32, else "<arch>+<optimisation>"."""
    opt = parse_optimization(optimization)
    return arch if opt.reference else f"{arch}+{opt.name}"


def unsupported_reason(opt: Optimization, device: str) -> str | None:
    """Why `opt` cannot run on `device` (a sentence), or None when it can."""
    kind = device.split(":")[0]
    if opt.int8 and kind != "cpu":
        return "int8 dynamic quantisation has CPU kernels only"
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
        enc = {k: v.to(self.device, non_blocking=True) for k, v in enc.items()}
        multiple = COMPILE_PAD_MULTIPLE if self.opt.compile else 1
        out = torch.empty(len(queries), dtype=torch.float32)
        with torch.inference_mode():
            for idx in chunks(lengths, self.batch_size, self.opt.sort):
                width = min(
                    _pad_width(int(lengths[idx].max()), multiple), enc["input_ids"].shape[1]
                )
                rows = torch.as_tensor(idx, device=self.device)
                batch = {k: v.index_select(0, rows)[:, :width] for k, v in enc.items()}
                logits = self.forward(**batch, return_dict=True).logits.float()
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
) -> Any:
    """Install `optimization` on a loaded `rerankers.ModelReranker` (in place) and return it.

    The reranker must have been loaded with bf16=False. fp32 leaves it untouched; autocast
    switches on its own bf16 autocast; everything else replaces its `_score_pairs` with a lean
    scorer (`reranker.lean`) built around the reranker's own model object.
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
    elif arch == "colbert":
        lean = LeanColBERT(reranker.model, reranker.device, opt, batch, sort_batch_size)
    else:
        raise ConfigError(f"latency.optimizations={opt.name!r}: no lean path for arch {arch!r}")
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
