"""The ColBERT architecture (PyLate): late interaction, MaxSim over token embeddings.

Here: its declarations and hooks (`ColBERTArch`), its LanceDB reranker (`ColBERTReranker`),
its lean scorer for the latency speed-ups (`LeanColBERT`), its mined-tuple dev evaluator, and
`maxsim`, the one MaxSim both scorers use.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from rerank_sweeps.archs.base import Architecture, features_module
from rerank_sweeps.config import UserError
from rerank_sweeps.data import NTuple
from rerank_sweeps.distill_data import distillation_rows
from rerank_sweeps.rerankers import ModelReranker
from rerank_sweeps.speedups import (
    COMPILE_PAD_MULTIPLE,
    Optimization,
    chunks,
    maybe_compile,
    pad_width,
    transform_module,
)
from rerank_sweeps.training import mean_metrics, ntuple_columns, rank_metrics

if TYPE_CHECKING:
    from pathlib import Path

    from rerank_sweeps.config import RunConfig
    from rerank_sweeps.distill_data import TeacherScores


class ColBERTArch(Architecture):
    """PyLate ColBERT trained with PyLate's losses by a SentenceTransformerTrainer."""

    name = "colbert"
    title = "ColBERT (PyLate)"
    loader = "pylate.models.ColBERT(path)"
    losses = ("contrastive", "distillation")
    teacher_losses = ("distillation",)
    own_fields = ("query_length", "embedding_size", "temperature")
    saved_fields = ("max_length", "query_length", "embedding_size")
    card_fields = ("query_length",)
    pretrained_field = "pretrained_colbert"

    def reranker_class(self) -> type[ModelReranker]:
        """`ColBERTReranker`."""
        return ColBERTReranker

    def load_start_model(self, path: str, conf: RunConfig, local_only: bool) -> Any:
        """A PyLate ColBERT (a base LM gets a fresh, seeded projection)."""
        from pylate.models import ColBERT

        return ColBERT(
            path,
            embedding_size=conf.arch.embedding_size,
            query_length=conf.arch.query_length,
            document_length=conf.arch.max_length,
            trust_remote_code=conf.base.trust_remote_code,
            local_files_only=local_only,
        )

    def detect(self, path: Path) -> bool:
        """A PyLate ColBERT lists a `pylate` module in modules.json; a Stanford ColBERT
        checkpoint has artifact.metadata."""
        modules = path / "modules.json"
        if modules.is_file() and "pylate" in modules.read_text(encoding="utf-8", errors="replace"):
            return True
        return (path / "artifact.metadata").is_file()

    def tuple_evaluator(self, rows: Sequence[NTuple], name: str, at_k: int) -> Any:
        """Each question's positive + hard negatives reranked with MaxSim."""
        return _colbert_evaluator_class()(rows, name=name, at_k=at_k)

    def training_arguments(self, conf: RunConfig, common: dict[str, Any]) -> Any:
        """SentenceTransformerTrainingArguments; the contrastive loss uses in-batch negatives
        (no text twice in a batch), distillation compares a query with its own documents."""
        from sentence_transformers.training_args import (
            BatchSamplers,
            SentenceTransformerTrainingArguments,
        )

        if self.loss_name(conf) == "distillation":
            return SentenceTransformerTrainingArguments(**common)
        return SentenceTransformerTrainingArguments(
            **common, batch_sampler=BatchSamplers.NO_DUPLICATES
        )

    def dataset_and_loss(
        self,
        conf: RunConfig,
        model: Any,
        train: Sequence[NTuple],
        teacher_scores: TeacherScores | None,
    ) -> tuple[Any, Any]:
        """contrastive: (query, positive, negative_1..n), PyLate's Contrastive loss at
        `arch.temperature`. distillation: (query, documents [positive, *negatives], scores),
        the KL divergence between the softmax of the teacher's scores and of the student's
        (min-max normalised) MaxSim."""
        from datasets import Dataset
        from pylate import losses

        if self.loss_name(conf) == "distillation":
            if teacher_scores is None:
                raise UserError("arch.loss=distillation trains on teacher scores: none were given")
            rows = distillation_rows(train, teacher_scores.scores, conf.arch.teacher_scale)
            return Dataset.from_dict(rows), losses.Distillation(model)
        dataset = Dataset.from_dict(ntuple_columns(train, what="ColBERT"))
        return dataset, losses.Contrastive(model, temperature=conf.arch.temperature)

    def trainer(self, **kwargs: Any) -> Any:
        """A SentenceTransformerTrainer with PyLate's collator."""
        from pylate import utils
        from sentence_transformers import SentenceTransformerTrainer

        collator = utils.ColBERTCollator(kwargs["model"].tokenize)
        return SentenceTransformerTrainer(**kwargs, data_collator=collator)

    def lean_scorer(
        self, model: Any, device: str, opt: Optimization, batch_size: int, sort_batch_size: int
    ) -> Any:
        """`LeanColBERT`."""
        return LeanColBERT(model, device, opt, batch_size, sort_batch_size)

    def export_module(self, model: Any) -> tuple[Any, str]:
        """PyLate ColBERT's token embeddings (batch, length, dim), before normalisation."""
        return features_module(
            model, "colbert", lambda colbert, features: colbert(features)["token_embeddings"]
        )

    def sample_features(self, model: Any, queries: list[str], texts: list[str]) -> Any:
        """The texts tokenised as documents (PyLate's prefix tokens)."""
        del queries
        return model.tokenize(texts, is_query=False)

    def backbone(self, model: Any) -> Any:
        """The whole ColBERT: the export's name scopes start at it."""
        return model

    def hf_config(self, model: Any) -> Any:
        """The transformers config of the ColBERT's first module."""
        return model[0].auto_model.config

    def runner_forward(self, runner: Any) -> Any:
        """`runner.st_forward`: the runner called like a sentence-transformers model."""
        return runner.st_forward


def maxsim(query: Any, docs: Any, doc_mask: Any) -> Any:
    """ColBERT's score of one query against n documents: for each query token the best
    document token's similarity, summed. `query` (Lq, D), `docs` (n, L, D), `doc_mask` (n, L)
    marks the document tokens that count; returns (n,)."""
    import torch

    sim = torch.einsum("qd,nld->nql", query, docs)
    sim = sim.masked_fill(~doc_mask[:, None, :], float("-inf"))
    return sim.max(dim=2).values.sum(dim=1)


class ColBERTReranker(ModelReranker):
    """A PyLate ColBERT; the score of a pair is MaxSim over token embeddings."""

    @cached_property
    def model(self) -> Any:
        """The ColBERT model, loaded on first use, with forward timing hooks."""
        from pylate import models

        kwargs: dict[str, Any] = {"device": self.device}
        if self.meta.get("query_length"):
            kwargs["query_length"] = int(self.meta["query_length"])
        if self.meta.get("max_length"):
            kwargs["document_length"] = int(self.meta["max_length"])
        colbert = models.ColBERT(str(self.model_dir), **kwargs)
        colbert.eval()
        modules = list(colbert.children())
        started: list[float] = []

        # PyLate calls `forward` directly, so the hooks sit on its first and last modules.
        def begin(*_: Any) -> None:
            self._sync()
            started.append(time.perf_counter())

        def end(*_: Any) -> None:
            self._sync()
            if started:
                self.forward_seconds += time.perf_counter() - started.pop()

        modules[0].register_forward_pre_hook(begin)
        modules[-1].register_forward_hook(end)
        return colbert

    def _encode(self, texts: list[str], is_query: bool) -> list[Any]:
        import torch

        with torch.inference_mode(), self._autocast():
            embeddings = self.model.encode(
                texts,
                batch_size=self.batch_size,
                is_query=is_query,
                convert_to_numpy=False,
                convert_to_tensor=False,
                show_progress_bar=False,
            )
        return [e.float() for e in embeddings]

    def _score_pairs(self, queries: list[str], texts: list[str]) -> np.ndarray:
        import torch

        unique_queries = list(dict.fromkeys(queries))
        unique_texts = list(dict.fromkeys(texts))
        q_emb = dict(zip(unique_queries, self._encode(unique_queries, True), strict=True))
        d_emb = dict(zip(unique_texts, self._encode(unique_texts, False), strict=True))
        out = np.empty(len(queries), dtype=np.float32)
        by_query: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            by_query.setdefault(q, []).append(i)
        for q, rows in by_query.items():
            docs = [d_emb[texts[i]] for i in rows]
            padded = torch.nn.utils.rnn.pad_sequence(docs, batch_first=True)
            lengths = torch.tensor([d.shape[0] for d in docs], device=padded.device)
            mask = torch.arange(padded.shape[1], device=padded.device)[None, :] < lengths[:, None]
            out[rows] = maxsim(q_emb[q], padded, mask).cpu().numpy()
        return out


class LeanColBERT:
    """Score (query, text) pairs with a PyLate ColBERT (MaxSim) at low overhead.

    Tokenisation is PyLate's own (`ColBERT.tokenize`: prefix tokens, query expansion), and the
    masks are PyLate's (queries: every token under query expansion; documents: attention mask
    minus the punctuation skiplist), so scores equal `ColBERTReranker`'s up to
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
                else min(pad_width(int(lengths[idx].max()), multiple), width_all)
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
                out[rows] = maxsim(q, d_emb[docs], d_mask[docs]).cpu().numpy()
        return out


def _colbert_evaluator_class():
    from sentence_transformers.evaluation import SentenceEvaluator

    class ColBERTRerankingEvaluator(SentenceEvaluator):
        """Reranks each dev question's positive + hard negatives with MaxSim.

        PyLate's ColBERTTripletEvaluator reports only pairwise accuracy over triplets; this one
        reports the same accuracy (over every (positive, negative) pair, same scoring) plus the
        metrics of CrossEncoderRerankingEvaluator (map, mrr@10, ndcg@10), so CE and ColBERT dev
        results compare directly and ndcg@10 selects the best checkpoint for both.
        """

        def __init__(self, rows: Sequence[NTuple], name: str, at_k: int, batch_size: int = 32):
            super().__init__()
            self.at_k = at_k
            self.rows = list(rows)
            self.name = name
            self.batch_size = batch_size
            self.primary_metric = f"ndcg@{at_k}"
            self.greater_is_better = True

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1):
            from pylate.scores import colbert_scores_pairwise

            queries = model.encode(
                [t.question for t in self.rows],
                is_query=True,
                batch_size=self.batch_size,
                show_progress_bar=False,
            )
            docs = [d for t in self.rows for d in [t.positive, *t.negatives]]
            doc_emb = model.encode(
                docs, is_query=False, batch_size=self.batch_size, show_progress_bar=False
            )
            # Each (query, document) pair on its own, unpadded: exact MaxSim, the scoring of
            # PyLate's ColBERTTripletEvaluator.
            owners = [i for i, t in enumerate(self.rows) for _ in range(1 + len(t.negatives))]
            scores = colbert_scores_pairwise([queries[i] for i in owners], list(doc_emb))
            scores = scores.float().cpu().numpy()
            per_query, offset = [], 0
            for t in self.rows:
                n = 1 + len(t.negatives)
                per_query.append(rank_metrics(scores[offset : offset + n], self.at_k))
                offset += n
            metrics = self.prefix_name_to_metrics(mean_metrics(per_query), self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return ColBERTRerankingEvaluator
