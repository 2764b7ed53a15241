"""The cross-encoder architecture (sentence-transformers `CrossEncoder`): one logit per
(query, passage) pair.

Here: its declarations and hooks (`CrossEncoderArch`), its LanceDB reranker
(`CrossEncoderReranker`: raw logits as scores), its lean scorer for the latency speed-ups
(`LeanCrossEncoder`), and its training data and losses (`ce_dataset_and_loss`). A little over
450 lines because the lean scorer's CUDA-graph path belongs to this architecture alone.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from rerank_sweeps.archs.base import Architecture, features_module
from rerank_sweeps.config import UserError
from rerank_sweeps.data import NTuple
from rerank_sweeps.distill_data import margin_mse_rows, mse_pairs
from rerank_sweeps.rerankers import ModelReranker, length_sorted
from rerank_sweeps.score_input import META_KEY, ScoreInput
from rerank_sweeps.speedups import (
    COMPILE_PAD_MULTIPLE,
    GRAPH_PAD_MULTIPLE,
    Optimization,
    chunks,
    maybe_compile,
    pad_width,
    transform_module,
)
from rerank_sweeps.training import ntuple_columns

if TYPE_CHECKING:
    from pathlib import Path

    from rerank_sweeps.config import RunConfig
    from rerank_sweeps.distill_data import TeacherScores

log = logging.getLogger(__name__)


class CrossEncoderArch(Architecture):
    """sentence-transformers CrossEncoder with a single-logit head (`CrossEncoderTrainer`)."""

    name = "ce"
    title = "cross-encoder"
    loader = "CrossEncoder(path)"
    losses = ("bce", "lambda", "listnet", "cmnrl", "margin_mse", "mse")
    teacher_losses = ("margin_mse", "mse")
    own_fields = ("pos_weight", "score_in_input")
    saved_fields = ("max_length",)
    pretrained_field = "pretrained_ce"
    supports_graphs = True

    def reranker_class(self) -> type[ModelReranker]:
        """`CrossEncoderReranker`."""
        return CrossEncoderReranker

    def load_start_model(self, path: str, conf: RunConfig, local_only: bool) -> Any:
        """A CrossEncoder with one output (the base LM gets a fresh, seeded head)."""
        from sentence_transformers import CrossEncoder

        return CrossEncoder(
            path,
            num_labels=1,
            max_length=conf.arch.max_length,
            trust_remote_code=conf.base.trust_remote_code,
            local_files_only=local_only,
        )

    def detect(self, path: Path) -> bool:
        """A transformers `*ForSequenceClassification` model directory."""
        import json

        config = path / "config.json"
        if not config.is_file():
            return False
        try:
            architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures")
        except (json.JSONDecodeError, AttributeError):
            return False
        return any(str(a).endswith("ForSequenceClassification") for a in architectures or [])

    def input_tuples(self, conf: RunConfig, rows: Sequence[NTuple]) -> list[NTuple]:
        """With `arch.score_in_input`, every text carries its first-stage score
        (`score_input.ScoreInput`); else the tuples as they are."""
        if not conf.arch.score_in_input:
            return list(rows)
        if conf.mining.sampling_strategy == "top":
            log.warning(
                "arch.score_in_input with mining.sampling_strategy=top: the negatives are the "
                "retriever's top mistakes, scored above most positives, so the model learns "
                "that a high score means irrelevant; mining.sampling_strategy=random "
                "mining.range_max=%d samples them like the dev candidates",
                conf.dev.depth,
            )
        return ScoreInput(conf.index.embedder, conf.eval.device).tuples(rows)

    def tuple_evaluator(self, rows: Sequence[NTuple], name: str, at_k: int) -> Any:
        """sentence-transformers' CrossEncoderRerankingEvaluator over the mined tuples."""
        from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

        samples = [
            {"query": t.question, "positive": [t.positive], "negative": t.negatives} for t in rows
        ]
        return CrossEncoderRerankingEvaluator(
            samples, at_k=at_k, name=name, batch_size=64, show_progress_bar=False
        )

    def training_arguments(self, conf: RunConfig, common: dict[str, Any]) -> Any:
        """CrossEncoderTrainingArguments; cmnrl (in-batch negatives) sees no text twice."""
        from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments
        from sentence_transformers.training_args import BatchSamplers

        if self.loss_name(conf) == "cmnrl":
            common = {**common, "batch_sampler": BatchSamplers.NO_DUPLICATES}
        return CrossEncoderTrainingArguments(**common)

    def dataset_and_loss(
        self,
        conf: RunConfig,
        model: Any,
        train: Sequence[NTuple],
        teacher_scores: TeacherScores | None,
    ) -> tuple[Any, Any]:
        """See `ce_dataset_and_loss`."""
        return ce_dataset_and_loss(conf, model, train, teacher_scores)

    def trainer(self, **kwargs: Any) -> Any:
        """`ReloadingCrossEncoderTrainer` (a CrossEncoderTrainer that reloads its best model)."""
        return _cross_encoder_trainer_class()(**kwargs)

    def lean_scorer(
        self, model: Any, device: str, opt: Optimization, batch_size: int, sort_batch_size: int
    ) -> Any:
        """`LeanCrossEncoder`."""
        return LeanCrossEncoder(model, device, opt, batch_size, sort_batch_size)

    def export_module(self, model: Any) -> tuple[Any, str]:
        """The logits (batch, labels) of the CrossEncoder's transformers model."""
        return features_module(
            model.model, "model", lambda hf, features: hf(**features, return_dict=True).logits
        )

    def sample_features(self, model: Any, queries: list[str], texts: list[str]) -> Any:
        """The pairs through the CrossEncoder's tokenizer."""
        return model.tokenizer(queries, texts, padding=True, return_tensors="pt")

    def backbone(self, model: Any) -> Any:
        """The CrossEncoder's transformers model."""
        return model.model

    def runner_forward(self, runner: Any) -> Any:
        """`runner.hf_forward`: the runner called like a transformers model."""
        return runner.hf_forward


class CrossEncoderReranker(ModelReranker):
    """A sentence-transformers CrossEncoder; the score of a pair is its raw logit.

    Raw logits rank exactly like the sigmoid probabilities but do not saturate into float32
    ties at 1.0.
    """

    @cached_property
    def score_input(self) -> ScoreInput | None:
        """The first-stage scores this model reads in its input (`arch.score_in_input`)."""
        spec = self.meta.get(META_KEY)
        return ScoreInput(spec["embedder"], self.device) if spec else None

    def prepare_texts(self, queries: list[str], texts: list[str]) -> list[str]:
        """The texts with their first-stage score in front, for a model trained so."""
        if self.score_input is None:
            return texts
        return self.score_input.passages(queries, texts)

    @cached_property
    def model(self) -> Any:
        """The CrossEncoder, loaded on first use."""
        from sentence_transformers import CrossEncoder

        max_length = self.meta.get("max_length")
        ce = CrossEncoder(str(self.model_dir), device=self.device, max_length=max_length)
        ce.model.eval()
        return ce

    def _score_pairs(self, queries: list[str], texts: list[str]) -> np.ndarray:
        ce = self.model
        order = length_sorted(queries, texts)
        max_length = ce.max_length or min(ce.tokenizer.model_max_length, 512)
        batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        local = threading.local()

        def tokenize(idx: np.ndarray) -> Any:
            # A fast tokenizer mutates its Rust state per call: one copy per worker thread.
            if not hasattr(local, "tokenizer"):
                local.tokenizer = ce.tokenizer if workers == 0 else copy.deepcopy(ce.tokenizer)
            return local.tokenizer(
                [queries[i] for i in idx],
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )

        out = np.empty(len(queries), dtype=np.float32)
        workers = self.tokenize_workers
        if workers == 0:
            for idx in batches:
                out[idx] = self._forward(tokenize(idx))
            return out
        # On a GPU the forward pass is faster than tokenising on one core: worker threads
        # tokenise the next batches (a bounded window) while the device runs this one.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            window = 2 * workers
            pending = deque(pool.submit(tokenize, idx) for idx in batches[:window])
            for n, idx in enumerate(batches):
                features = pending.popleft().result()
                if n + window < len(batches):
                    pending.append(pool.submit(tokenize, batches[n + window]))
                out[idx] = self._forward(features)
        return out

    def _forward(self, features: Any) -> np.ndarray:
        import torch

        features = features.to(self.device)
        with torch.inference_mode(), self._autocast():
            self._sync()
            started = time.perf_counter()
            logits = self.model.model(**features, return_dict=True).logits
            self._sync()
            self.forward_seconds += time.perf_counter() - started
        logits = logits.float()
        if logits.shape[-1] == 1:
            scores = logits[:, 0]
        else:  # a classifier head: log-probability of the last ("relevant") class
            scores = torch.log_softmax(logits, dim=-1)[:, -1]
        return scores.cpu().numpy()


class LeanCrossEncoder:
    """Score (query, text) pairs with a sentence-transformers CrossEncoder at low overhead.

    Scores equal `CrossEncoderReranker`'s (raw logit; log-probability of the last
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
        return min(pad_width(self.max_length, self.multiple), int(positions or 10**9))

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
        full = min(pad_width(enc["input_ids"].shape[1], self.multiple), self.max_width)
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
                    pad_width(int(lengths[idx].max()), self.multiple), enc["input_ids"].shape[1]
                )
                rows = torch.as_tensor(idx, device=self.device)
                batch = {k: v.index_select(0, rows)[:, :width] for k, v in enc.items()}
                logits = self._logits(batch).float()
                if logits.shape[-1] == 1:
                    scores = logits[:, 0]
                else:  # same convention as CrossEncoderReranker
                    scores = torch.log_softmax(logits, dim=-1)[:, -1]
                out[torch.as_tensor(idx)] = scores.cpu()
        return out.numpy()


def ce_pairs(rows: Sequence[NTuple]) -> dict[str, list]:
    """Labelled (query, passage, label) pairs: 1 for the positive, 0 for each negative."""
    query, passage, label = [], [], []
    for t in rows:
        for text, y in [(t.positive, 1.0)] + [(n, 0.0) for n in t.negatives]:
            query.append(t.question)
            passage.append(text)
            label.append(y)
    return {"query": query, "passage": passage, "label": label}


def ce_lists(rows: Sequence[NTuple]) -> dict[str, list]:
    """Listwise rows, one per question: query, docs [positive, *negatives], labels [1, 0, ...]."""
    return {
        "query": [t.question for t in rows],
        "docs": [[t.positive, *t.negatives] for t in rows],
        "labels": [[1] + [0] * len(t.negatives) for t in rows],
    }


def _cross_encoder_trainer_class():
    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    class ReloadingCrossEncoderTrainer(CrossEncoderTrainer):
        """CrossEncoderTrainer whose best model is reloaded through `CrossEncoder(checkpoint)`.

        The stock `_load_best_model` (transformers 5.3 + sentence-transformers 5.3) reads the
        checkpoint's raw state dict, but BERT checkpoints are saved with legacy LayerNorm names
        (gamma/beta), so every LayerNorm silently kept its last-step weights: a model mixed from
        two steps. Loading through `from_pretrained` renames the keys correctly.
        """

        def _load_best_model(self) -> None:
            best = self.state.best_model_checkpoint
            if not best:
                return
            self.model.model_card_data.set_best_model_step(int(best.rsplit("-", 1)[-1]))
            self._load_from_checkpoint(best)

    return ReloadingCrossEncoderTrainer


def ce_dataset_and_loss(
    conf: RunConfig,
    model: Any,
    train: Sequence[NTuple],
    teacher_scores: TeacherScores | None = None,
) -> tuple[Any, Any]:
    """The training dataset and sentence-transformers loss of `arch.loss` for a cross-encoder.

    - bce: (query, passage, label) pairs, one row per (question, text), BinaryCrossEntropyLoss
      with `pos_weight` (null: the number of negatives).
    - lambda / listnet: one row per question, (query, docs, labels) with the positive first
      (label 1) and every negative (label 0); LambdaLoss / ListNetLoss on the raw logits.
      The model's own activation (applied by `predict`) becomes Identity, saved with it, so
      the scores it gives are the logits these losses trained: Sigmoid would squash the
      unbounded listwise logits into float32 ties at 1.0.
    - cmnrl: one row per question, (query, positive, negative_1..n),
      CachedMultipleNegativesRankingLoss (also in-batch negatives; CPU-safe gradient cache).
    - margin_mse: one row per question, (query, positive, negative_1..n, label) with the
      teacher's margins score(positive) - score(negative_i) as labels; MarginMSELoss.
    - mse: (query, passage, label) pairs with the teacher's score as label; MSELoss.
      Both regress raw logits onto teacher scores, so the saved activation is Identity too.

    A dataset row is one training example: for the listwise and n-tuple losses that is one
    question with all its texts, so `arch.batch_size` counts questions there, pairs for bce.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import losses

    name = CrossEncoderArch().loss_name(conf)
    if name == "bce":
        pos_weight = conf.arch.pos_weight if conf.arch.pos_weight is not None else conf.negatives
        loss = losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(pos_weight)))
        return Dataset.from_dict(ce_pairs(train)), loss
    if name in ("lambda", "listnet"):
        model.set_activation_fn(torch.nn.Identity())
        cls = losses.LambdaLoss if name == "lambda" else losses.ListNetLoss
        return Dataset.from_dict(ce_lists(train)), cls(model, activation_fn=torch.nn.Identity())
    if name == "cmnrl":
        dataset = Dataset.from_dict(ntuple_columns(train, what="arch.loss=cmnrl"))
        return dataset, losses.CachedMultipleNegativesRankingLoss(model)
    if name in ("margin_mse", "mse"):
        if teacher_scores is None:
            raise UserError(f"arch.loss={name} trains on teacher scores: none were given")
        model.set_activation_fn(torch.nn.Identity())
        scale = conf.arch.teacher_scale
        if name == "margin_mse":
            rows = margin_mse_rows(train, teacher_scores.scores, scale)
            return Dataset.from_dict(rows), losses.MarginMSELoss(model)
        rows = mse_pairs(train, teacher_scores.scores, scale)
        return Dataset.from_dict(rows), losses.MSELoss(model)
    raise UserError(f"arch.loss={name!r} is not a cross-encoder loss")  # validated in RunConfig
