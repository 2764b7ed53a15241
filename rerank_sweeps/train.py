"""Reranker training: cross-encoders (sentence-transformers) and ColBERT (PyLate).

Two cached stages:

- `model_stage(conf, cache, split_art, neg_art)`: the reranker fine-tuned on the mined
  n-tuples (`epochs=0`: the starting model, untouched), with its dev metrics before and after.
- `untrained_stage(conf, cache)`: the starting model alone (base LM + a fresh head or
  projection, or the pretrained reranker), the "untrained" baseline of every evaluation.

Both write `model/` (loadable with `CrossEncoder(path)` / `pylate.models.ColBERT(path)`, with a
model card) and `reranker.json`. Training keeps its checkpoints in the cache's persistent work
dir, so a killed run resumes from its last complete checkpoint instead of starting over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import ARCH_LOSSES, RunConfig, UserError
from rerank_sweeps.console import use_quiet_progress
from rerank_sweeps.data import NTuple, load_negatives
from rerank_sweeps.devsignal import DevArtifacts, DevData, candidate_evaluator, finish_training
from rerank_sweeps.distill import (
    TeacherScores,
    distillation_rows,
    load_teacher_scores,
    loss_uses_teacher,
    margin_mse_rows,
    mse_pairs,
    parse_teacher,
    teacher_scores_stage,
    uses_teacher,
)
from rerank_sweeps.models import hub_unavailable, resolve_model

log = logging.getLogger(__name__)

MODEL_VERSION = 1
UNTRAINED_VERSION = 1
DEV_NAME = "dev"
AT_K = 10
DEV_METRIC = f"eval_{DEV_NAME}_ndcg@{AT_K}"  # what picks the best checkpoint and feeds pruners
# Fields of ArchConfig that only one architecture reads: left out of the other's cache key.
_CE_ONLY = ("pos_weight",)
_COLBERT_ONLY = ("query_length", "embedding_size", "temperature")
# Fields of ArchConfig that never change the trained weights: left out of every cache key.
_NOT_IN_KEY = ("checkpoint_minutes",)


# ----------------------------------------------------------------------------- stages


def arch_key(conf: RunConfig) -> dict[str, Any]:
    """The ArchConfig fields this architecture reads (the others must not trigger retraining)."""
    fields = asdict(conf.arch)
    for name in _COLBERT_ONLY if conf.arch.name == "ce" else _CE_ONLY:
        fields.pop(name)
    for name in _NOT_IN_KEY:
        fields.pop(name, None)
    fields["loss"] = loss_name(conf)  # null and the arch's default name train the same model
    if fields["loss"] != "bce":
        fields.pop("pos_weight", None)  # read by BinaryCrossEntropyLoss only
    if loss_uses_teacher(fields["loss"]):
        # The teacher's scores artifact is an input of the model stage too (what the teacher
        # is on disk); this is the teacher as configured, in one canonical form.
        spec = parse_teacher(conf.arch.teacher)
        fields["teacher"] = spec.describe() if spec is not None else None
    else:  # read by the distillation losses only
        fields.pop("teacher", None)
        fields.pop("teacher_scale", None)
    return fields


def loss_name(conf: RunConfig) -> str:
    """The configured training loss, `arch.loss` null meaning the architecture's default."""
    return conf.arch.loss or ARCH_LOSSES[conf.arch.name][0]


def model_stage(
    conf: RunConfig,
    cache: Cache,
    split_art: Artifact,
    neg_art: Artifact,
    dev: DevArtifacts | None = None,
) -> Artifact:
    """The trained reranker: `model/` + `reranker.json`, cached on what training reads.

    The key holds arch, base, init, epochs, negatives, seed, the negatives artifact (which
    itself depends on the split) and, with `dev`, the dev candidates that pick the best
    checkpoint (their protocol is `conf.dev`, fixed), never evaluation-only settings such as
    top_k or query_type. Without `dev`, the mined dev tuples drive checkpoint selection.
    A distillation loss (`arch.teacher`) adds the teacher scores artifact to the inputs; it is
    built first (and a teacher trained in this job before it, by this same stage).
    `split_art` is accepted for the pipeline's uniform signature; training reads only `neg_art`.
    """
    # Training reads the negatives artifact (train/dev tuples; it depends on the split); a
    # teacher trained in this job gets `split_art` passed on to its own model stage.
    teacher_art = None
    if uses_teacher(conf):
        teacher_art = teacher_scores_stage(conf, cache, split_art, neg_art, dev)
    key_config = {
        "arch": arch_key(conf),
        "base": asdict(conf.base),
        "init": conf.init,
        "epochs": conf.epochs,
        "negatives": conf.negatives,
        "seed": conf.seed,
    }

    def build(out_dir: Path, work_dir: Path) -> None:
        train_rows, dev_rows = read_tuples(neg_art)
        dev_data = DevData.load(conf, dev) if dev is not None else None
        teacher = None
        if teacher_art is not None:
            teacher = load_teacher_scores(teacher_art, train_rows)
        train_reranker(
            conf, train_rows, dev_rows, out_dir, work_dir, dev_data, teacher_scores=teacher
        )

    inputs = [neg_art] if dev is None else [neg_art, dev.split, dev.candidates]
    inputs += [teacher_art] if teacher_art is not None else []
    return cache.stage("model", MODEL_VERSION, key_config, inputs, build)


def untrained_stage(conf: RunConfig, cache: Cache) -> Artifact:
    """The starting model saved as is (base LM + fresh head/projection, or the pretrained reranker)."""
    key_config = {
        "arch": conf.arch.name,
        "base": asdict(conf.base),
        "init": conf.init,
        "seed": conf.seed,
        # The saved model's tokenisation settings travel in its config, so they are read too.
        "max_length": conf.arch.max_length,
        **(
            {
                "query_length": conf.arch.query_length,
                "embedding_size": conf.arch.embedding_size,
            }
            if conf.arch.name == "colbert"
            else {}
        ),
    }

    def build(out_dir: Path, work_dir: Path) -> None:
        del work_dir
        model, model_id = load_start_model(conf)
        info = _info(conf, model_id, epochs=0, negatives=0, dev={}, dev_untrained={})
        save_reranker(model, out_dir, info, conf, num_train=0)

    return cache.stage("untrained", UNTRAINED_VERSION, key_config, [], build)


# ----------------------------------------------------------------------------- data


def read_tuples(neg_art: Artifact | Path | str) -> tuple[list[NTuple], list[NTuple]]:
    """Train and dev n-tuples of a negatives artifact."""
    negatives = load_negatives(neg_art)
    return negatives.train, negatives.dev


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def clean_dev(dev: Sequence[NTuple]) -> list[NTuple]:
    """Dev rows whose negatives never repeat the positive (or each other): a copy of the
    positive among the negatives would make a perfect reranker look wrong."""
    rows = []
    for t in dev:
        seen = {_norm(t.positive)}
        negatives = []
        for n in t.negatives:
            if _norm(n) not in seen:
                seen.add(_norm(n))
                negatives.append(n)
        if negatives:
            rows.append(NTuple(t.question, t.positive, negatives))
    return rows


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


def colbert_tuples(rows: Sequence[NTuple], what: str = "ColBERT") -> dict[str, list[str]]:
    """Columns query, positive, negative_1..n (n = the fewest negatives of any row)."""
    n = min((len(t.negatives) for t in rows), default=0)
    if n == 0:
        raise UserError(f"{what} training needs at least one negative per training question")
    columns: dict[str, list[str]] = {"query": [], "positive": []}
    for i in range(1, n + 1):
        columns[f"negative_{i}"] = []
    for t in rows:
        columns["query"].append(t.question)
        columns["positive"].append(t.positive)
        for i in range(n):
            columns[f"negative_{i + 1}"].append(t.negatives[i])
    return columns


# ----------------------------------------------------------------------------- models


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _is_cached(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model_id, "config.json")
    return isinstance(found, str)


def locate_model(model_id: str) -> tuple[str, bool]:
    """(path or hub id, local_files_only) for loading `model_id`, or a one-line UserError.

    Without a network, huggingface_hub retries for minutes before failing; we look first
    (offline copy, HF cache, a 3 s TCP probe) and fail at once with a readable line.
    """
    resolved = resolve_model(model_id)
    if Path(resolved).is_dir():
        return resolved, True
    if _is_cached(resolved):
        return resolved, _offline_env() or not _hub_reachable()
    if _offline_env():
        raise hub_unavailable(model_id, RuntimeError("HF_HUB_OFFLINE is set and it is not cached"))
    if not _hub_reachable():
        raise hub_unavailable(model_id, ConnectionError("huggingface.co is unreachable"))
    return resolved, False


def start_model_id(conf: RunConfig) -> str:
    """The model training starts from: the base LM, or the pretrained reranker (init=pretrained)."""
    if conf.init == "pretrained":
        pretrained = (
            conf.base.pretrained_ce if conf.arch.name == "ce" else conf.base.pretrained_colbert
        )
        assert pretrained  # validated in RunConfig
        return pretrained
    return conf.base.model_id


def load_start_model(conf: RunConfig) -> tuple[Any, str]:
    """The starting model (seeded: the fresh head/projection is the same in every process)."""
    import transformers

    model_id = start_model_id(conf)
    path, local_only = locate_model(model_id)
    transformers.set_seed(conf.seed)
    try:
        if conf.arch.name == "ce":
            from sentence_transformers import CrossEncoder

            model = CrossEncoder(
                path,
                num_labels=1,
                max_length=conf.arch.max_length,
                trust_remote_code=conf.base.trust_remote_code,
                local_files_only=local_only,
            )
        else:
            from pylate.models import ColBERT

            model = ColBERT(
                path,
                embedding_size=conf.arch.embedding_size,
                query_length=conf.arch.query_length,
                document_length=conf.arch.max_length,
                trust_remote_code=conf.base.trust_remote_code,
                local_files_only=local_only,
            )
    except OSError as err:  # missing files of a hub id, or the hub failing mid-download
        raise hub_unavailable(model_id, err) from None
    return model, model_id


# ----------------------------------------------------------------------------- evaluation


def rank_metrics(scores: Sequence[float], at_k: int = AT_K) -> dict[str, float]:
    """MRR@k, nDCG@k, MAP and pairwise accuracy when `scores[0]` is the one positive.

    Ties count against the positive (it ranks below every negative scoring the same), like
    sentence-transformers' CrossEncoderRerankingEvaluator.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive, negatives = scores[0], scores[1:]
    rank = 1 + int(np.sum(negatives >= positive))
    return {
        "map": 1.0 / rank,
        f"mrr@{at_k}": 1.0 / rank if rank <= at_k else 0.0,
        f"ndcg@{at_k}": 1.0 / math.log2(rank + 1) if rank <= at_k else 0.0,
        "accuracy": float(np.mean(positive > negatives)) if len(negatives) else 1.0,
    }


def _mean_metrics(per_query: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([m[k] for m in per_query])) for k in per_query[0]}


def _colbert_evaluator_class():
    from sentence_transformers.evaluation import SentenceEvaluator

    class ColBERTRerankingEvaluator(SentenceEvaluator):
        """Reranks each dev question's positive + hard negatives with MaxSim.

        PyLate's ColBERTTripletEvaluator reports only pairwise accuracy over triplets; this one
        reports the same accuracy (over every (positive, negative) pair, same scoring) plus the
        metrics of CrossEncoderRerankingEvaluator (map, mrr@10, ndcg@10), so CE and ColBERT dev
        results compare directly and ndcg@10 selects the best checkpoint for both.
        """

        def __init__(self, rows: Sequence[NTuple], name: str = DEV_NAME, batch_size: int = 32):
            super().__init__()
            self.rows = list(rows)
            self.name = name
            self.batch_size = batch_size
            self.primary_metric = f"ndcg@{AT_K}"
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
                per_query.append(rank_metrics(scores[offset : offset + n]))
                offset += n
            metrics = self.prefix_name_to_metrics(_mean_metrics(per_query), self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return ColBERTRerankingEvaluator


def make_evaluator(conf: RunConfig, dev: Sequence[NTuple]):
    """The dev evaluator of this architecture (positive + its hard negatives per question)."""
    rows = clean_dev(dev)
    if conf.arch.name == "ce":
        from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

        samples = [
            {"query": t.question, "positive": [t.positive], "negative": t.negatives} for t in rows
        ]
        return CrossEncoderRerankingEvaluator(
            samples, at_k=AT_K, name=DEV_NAME, batch_size=64, show_progress_bar=False
        )
    return _colbert_evaluator_class()(rows, name=DEV_NAME)


def evaluate_dev(evaluator: Any, model: Any) -> dict[str, float]:
    """Dev metrics of `model`, keys without the evaluator's name prefix."""
    if evaluator is None:
        return {}
    import torch

    with torch.inference_mode():
        metrics = evaluator(model)
    prefix = DEV_NAME + "_"
    return {k.removeprefix(prefix): round(float(v), 6) for k, v in metrics.items()}


# ----------------------------------------------------------------------------- training


def use_bf16(setting: str) -> bool:
    """bf16 for training: `true`/`false`, or `auto` = whether this device computes bf16 natively."""
    import torch

    choice = str(setting).lower()
    if choice in ("true", "false"):
        return choice == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:  # private helpers, but the only direct test for AVX512-BF16 / AMX in torch
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def schedule(num_examples: int, conf: RunConfig) -> dict[str, int]:
    """Steps per epoch, total steps and the eval/save interval giving `evals_per_epoch` per epoch."""
    steps_per_epoch = max(1, math.ceil(num_examples / conf.arch.batch_size))
    total = steps_per_epoch * conf.epochs
    if conf.arch.max_steps > 0:
        total = min(total, conf.arch.max_steps) if total else conf.arch.max_steps
    first_epoch = min(steps_per_epoch, total)
    interval = max(1, math.ceil(first_epoch / conf.arch.evals_per_epoch))
    return {"steps_per_epoch": steps_per_epoch, "total": total, "interval": interval}


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint whose trainer_state.json (written last) parses; half-written
    checkpoints of a killed run are removed so the trainer never trips over them."""
    best: tuple[int, Path] | None = None
    for ckpt in output_dir.glob("checkpoint-*"):
        try:
            step = int(ckpt.name.split("-")[1])
            json.loads((ckpt / "trainer_state.json").read_text())
        except (ValueError, IndexError, OSError):
            shutil.rmtree(ckpt, ignore_errors=True)
            continue
        if best is None or step > best[0]:
            best = (step, ckpt)
    return best[1] if best else None


def _training_args(
    conf: RunConfig, output_dir: Path, sched: dict[str, int], bf16: bool, has_dev: bool
):
    import torch

    common: dict[str, Any] = {
        "output_dir": str(output_dir),
        "num_train_epochs": conf.epochs,
        "max_steps": sched["total"],
        "per_device_train_batch_size": conf.arch.batch_size,
        "per_device_eval_batch_size": conf.arch.batch_size,
        "learning_rate": conf.arch.lr,
        "warmup_steps": conf.arch.warmup_ratio,  # a float < 1 is a ratio in transformers 5
        "weight_decay": conf.arch.weight_decay,
        "seed": conf.seed,
        "bf16": bf16,
        "use_cpu": not torch.cuda.is_available(),
        # Without dev rows there is nothing to select on: checkpoints still fire (for resuming).
        "eval_strategy": "steps" if has_dev else "no",
        "eval_steps": sched["interval"],
        "save_strategy": "steps",
        "save_steps": sched["interval"],
        "save_total_limit": 2,
        "load_best_model_at_end": has_dev,
        "metric_for_best_model": DEV_METRIC if has_dev else None,
        "greater_is_better": True,
        "logging_steps": max(1, min(50, sched["interval"] // 4)),
        "logging_first_step": True,
        # Not "wandb": its callback merges every TrainingArgument into our run's config (or opens
        # a run in project `huggingface`); trainer_callbacks forwards the curves to our run.
        "report_to": "none",
        "disable_tqdm": False,
        "dataloader_num_workers": 0,
    }
    from sentence_transformers.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    if conf.arch.name == "ce":
        from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

        if loss_name(conf) == "cmnrl":  # in-batch negatives: no text twice in one batch
            common["batch_sampler"] = BatchSamplers.NO_DUPLICATES
        return CrossEncoderTrainingArguments(**common)

    # Contrastive uses in-batch negatives (no text twice in a batch); distillation compares
    # each query with its own documents only.
    if loss_name(conf) == "distillation":
        return SentenceTransformerTrainingArguments(**common)
    return SentenceTransformerTrainingArguments(**common, batch_sampler=BatchSamplers.NO_DUPLICATES)


def _evaluate_at_end_callback():
    from transformers import TrainerCallback

    class EvaluateAtEnd(TrainerCallback):
        """Evaluate the final step too, so the last weights compete for load_best_model_at_end."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = True
            return control

    return EvaluateAtEnd()


def _report_dev_callback():
    from transformers import TrainerCallback

    class ReportDevMetric(TrainerCallback):
        """Feed each dev evaluation to the Optuna sweeper's pruner (a no-op outside it)."""

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(DEV_METRIC)
            if value is not None:
                report_intermediate(state.global_step, float(value))
            return control

    return ReportDevMetric()


def report_intermediate(step: int, value: float) -> None:
    """Report a dev metric to the running Optuna trial, which may raise optuna.TrialPruned."""
    try:
        from hydra_plugins.rerank_sweeps_optuna import report
    except ImportError:  # the sweeper plugin is not installed: nothing to prune
        return
    report(step, value)


def dev_callbacks() -> list[Any]:
    """Trainer callbacks when there is a dev evaluator: evaluate at the end, report to pruners."""
    return [_evaluate_at_end_callback(), _report_dev_callback()]


def checkpoint_by_time_callback(
    minutes: float | None, clock: Callable[[], float] | None = None
) -> Any | None:
    """A callback that also checkpoints once `minutes` passed since the last save (None: none).

    It only sets `control.should_save` at a step's end; `save_steps` stays the eval interval,
    so transformers' check that save steps are a multiple of eval steps (required by
    `load_best_model_at_end`) is unaffected. A checkpoint saved without an evaluation carries
    no metric: `_save_checkpoint` keeps the best step found at the last evaluation, and the
    rotation (`save_total_limit`) protects that best checkpoint and the newest one, which is
    what `last_complete_checkpoint` resumes from. `clock` (seconds, default time.monotonic)
    is for tests.
    """
    if minutes is None:
        return None
    from transformers import TrainerCallback

    seconds = 60.0 * float(minutes)

    def now() -> float:
        return (clock or time.monotonic)()

    class CheckpointByTime(TrainerCallback):
        """Save a checkpoint when `seconds` passed since training began or the last save."""

        def __init__(self) -> None:
            self.last_save = now()

        def on_train_begin(self, args, state, control, **kwargs):
            self.last_save = now()  # model loading and a resume's setup do not count
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if now() - self.last_save >= seconds:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last_save = now()
            return control

    return CheckpointByTime()


def trainer_callbacks(conf: RunConfig, evaluator: Any) -> list[Any]:
    """Both trainers' callbacks: checkpoints by time always, the dev ones with an evaluator."""
    callbacks = dev_callbacks() if evaluator is not None else []
    by_time = checkpoint_by_time_callback(conf.arch.checkpoint_minutes)
    from rerank_sweeps.tracking import train_log_callback

    callbacks.append(train_log_callback())  # the curves into our W&B run (a no-op without one)
    return callbacks + ([by_time] if by_time is not None else [])


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

    name = loss_name(conf)
    if name == "bce":
        pos_weight = conf.arch.pos_weight if conf.arch.pos_weight is not None else conf.negatives
        loss = losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(pos_weight)))
        return Dataset.from_dict(ce_pairs(train)), loss
    if name in ("lambda", "listnet"):
        model.set_activation_fn(torch.nn.Identity())
        cls = losses.LambdaLoss if name == "lambda" else losses.ListNetLoss
        return Dataset.from_dict(ce_lists(train)), cls(model, activation_fn=torch.nn.Identity())
    if name == "cmnrl":
        dataset = Dataset.from_dict(colbert_tuples(train, what="arch.loss=cmnrl"))
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


def build_trainer(
    conf: RunConfig,
    model: Any,
    train: Sequence[NTuple],
    evaluator: Any,
    output_dir: Path,
    teacher_scores: TeacherScores | None = None,
):
    """The configured CrossEncoderTrainer / SentenceTransformerTrainer (PyLate) and its schedule.

    `teacher_scores` (aligned with `train`) feed the distillation losses.
    """
    from datasets import Dataset

    bf16 = use_bf16(conf.arch.bf16)
    if conf.arch.name == "ce":
        dataset, loss = ce_dataset_and_loss(conf, model, train, teacher_scores)
        sched = schedule(len(dataset), conf)
        trainer = _cross_encoder_trainer_class()(
            model=model,
            args=_training_args(conf, output_dir, sched, bf16, evaluator is not None),
            train_dataset=dataset,
            loss=loss,
            evaluator=evaluator,
            callbacks=trainer_callbacks(conf, evaluator),
        )
        return use_quiet_progress(trainer), sched, len(dataset)
    from pylate import losses, utils
    from sentence_transformers import SentenceTransformerTrainer

    if loss_name(conf) == "distillation":
        if teacher_scores is None:
            raise UserError("arch.loss=distillation trains on teacher scores: none were given")
        # (query, documents [positive, *negatives], scores): KL divergence between the
        # softmax of the teacher's scores and of the student's (min-max normalised) MaxSim.
        rows = distillation_rows(train, teacher_scores.scores, conf.arch.teacher_scale)
        dataset = Dataset.from_dict(rows)
        loss = losses.Distillation(model)
    else:
        dataset = Dataset.from_dict(colbert_tuples(train))
        loss = losses.Contrastive(model, temperature=conf.arch.temperature)
    sched = schedule(len(dataset), conf)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=_training_args(conf, output_dir, sched, bf16, evaluator is not None),
        train_dataset=dataset,
        loss=loss,
        evaluator=evaluator,
        data_collator=utils.ColBERTCollator(model.tokenize),
        callbacks=trainer_callbacks(conf, evaluator),
    )
    return use_quiet_progress(trainer), sched, len(dataset)


def train_reranker(
    conf: RunConfig,
    train: Sequence[NTuple],
    dev: Sequence[NTuple],
    out_dir: Path,
    work_dir: Path,
    dev_data: DevData | None = None,
    teacher_scores: TeacherScores | None = None,
) -> dict[str, Any]:
    """Train (or, with epochs=0, just save) the reranker into `out_dir`; resumable via `work_dir`.

    With `dev_data` the dev signal is the dev questions reranked among their real candidates
    (checkpoint selection, pruning), and the payload also holds the first stage's dev metrics,
    the dev gate and the fusion weights; without it, the mined dev tuples. Returns the
    reranker.json payload.
    """
    model, model_id = load_start_model(conf)
    if dev_data is not None and dev_data.items:
        meta = {"max_length": conf.arch.max_length, "query_length": conf.arch.query_length}
        evaluator = candidate_evaluator(conf.arch.name, dev_data, conf.eval.batch_size, meta)
    else:
        evaluator = make_evaluator(conf, dev) if clean_dev(dev) else None
    # The untrained dev metric is computed once per build: a resumed run reads it back.
    untrained_file = work_dir / "dev_untrained.json"
    if untrained_file.is_file():
        dev_untrained = json.loads(untrained_file.read_text())
    else:
        dev_untrained = evaluate_dev(evaluator, model)
        untrained_file.write_text(json.dumps(dev_untrained))
    extra: dict[str, Any] = {"train_seconds": 0.0, "steps": 0, "resumed_from_step": 0}
    if conf.epochs == 0 or not train:
        dev_metrics = dev_untrained
        num_train = 0
    else:
        output_dir = work_dir / "trainer"
        output_dir.mkdir(exist_ok=True)
        trainer, sched, num_train = build_trainer(
            conf, model, train, evaluator, output_dir, teacher_scores
        )
        resume = last_complete_checkpoint(output_dir)
        if resume is not None:
            state = json.loads((resume / "trainer_state.json").read_text())
            extra["resumed_from_step"] = int(state["global_step"])
            log.info("resuming training from %s", resume)
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        extra["train_seconds"] = round(time.perf_counter() - started, 2)
        extra["steps"] = int(trainer.state.global_step)
        extra["best_checkpoint_step"] = _step_of(trainer.state.best_model_checkpoint)
        extra["best_checkpoint_metric"] = trainer.state.best_metric
        extra["schedule"] = sched
        extra["loss"] = loss_name(conf)
        if teacher_scores is not None:
            extra["teacher"] = teacher_scores.identity
        extra["bf16"] = bool(trainer.args.bf16)
        model = trainer.model
        # The best checkpoint was evaluated during training: its dev metrics and scores are
        # reused rather than computed again (only the candidate evaluator keeps them).
        recalled = (
            evaluator.recall(extra["best_checkpoint_step"])
            if hasattr(evaluator, "recall")
            else None
        )
        dev_metrics = recalled if recalled is not None else evaluate_dev(evaluator, model)
    if dev_data is not None and evaluator is not None and hasattr(evaluator, "last_scores"):
        if evaluator.last_scores is None:  # the untrained metrics were read back from disk
            dev_metrics = evaluate_dev(evaluator, model)
        extra |= finish_training(dev_data, evaluator, model, dev_metrics)
    info = _info(conf, model_id, conf.epochs, conf.negatives, dev_metrics, dev_untrained, **extra)
    save_reranker(model, out_dir, info, conf, num_train=num_train, num_dev=len(clean_dev(dev)))
    return info


def _step_of(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(Path(checkpoint).name.split("-")[1])
    except (IndexError, ValueError):
        return None


# ----------------------------------------------------------------------------- saving


def _info(
    conf: RunConfig,
    model_id: str,
    epochs: int,
    negatives: int,
    dev: dict[str, float],
    dev_untrained: dict[str, float],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "arch": conf.arch.name,
        "base": conf.base.name,
        "model_id": model_id,
        "init": conf.init,
        "epochs": epochs,
        "negatives": negatives,
        "seed": conf.seed,
        "max_length": conf.arch.max_length,
        "query_length": conf.arch.query_length,
        "dev": dev,
        "dev_untrained": dev_untrained,
        **extra,
    }


def save_reranker(
    model: Any,
    out_dir: Path,
    info: dict[str, Any],
    conf: RunConfig,
    num_train: int,
    num_dev: int = 0,
) -> None:
    """Write `model/` (with our section in its model card) and `reranker.json` into `out_dir`."""
    model_dir = out_dir / "model"
    model.save(str(model_dir))
    card = model_dir / "README.md"
    existing = card.read_text(encoding="utf-8") if card.is_file() else ""
    section = model_card_section(info, conf, num_train, num_dev)
    card.write_text(_insert_after_front_matter(existing, section), encoding="utf-8")
    (out_dir / "reranker.json").write_text(json.dumps(info, indent=2))


def _insert_after_front_matter(card: str, section: str) -> str:
    """Our section first (after the YAML metadata), above the libraries' long template."""
    if card.startswith("---\n"):
        end = card.find("\n---\n", 4)
        if end != -1:
            head, rest = card[: end + 5], card[end + 5 :]
            return head + "\n" + section + "\n" + rest.lstrip("\n")
    return section + ("\n" + card if card else "")


def model_card_section(info: dict[str, Any], conf: RunConfig, num_train: int, num_dev: int) -> str:
    """The rerank_sweeps section of the model card: data, negatives, epochs, seed, dev results."""
    kind = "cross-encoder" if info["arch"] == "ce" else "ColBERT (PyLate)"
    lines = [
        "## rerank_sweeps training run",
        "",
        f"- Reranker: {kind}, started from `{info['model_id']}` (init={info['init']}, base={info['base']})",
        f"- Data: source={conf.data.source}"
        + (f" ({conf.data.hub_id})" if conf.data.source == "hub" else "")
        + (f" ({conf.data.path})" if conf.data.source == "local" else "")
        + f"; {num_train} training examples, {num_dev} dev questions",
        f"- Hard negatives per question: {info['negatives']} (mined with `{conf.mining.model_id}`)",
        f"- Epochs: {info['epochs']}; seed: {info['seed']}; lr {conf.arch.lr}, batch {conf.arch.batch_size}",
        f"- Max length: {info['max_length']}"
        + (f"; query length {info['query_length']}" if info["arch"] == "colbert" else ""),
    ]
    if info.get("teacher"):
        lines.append(
            f"- Distilled ({info.get('loss')}) from the teacher `{json.dumps(info['teacher'])}`"
        )
    if info["dev"] or info["dev_untrained"]:
        lines += ["", "| dev metric | untrained | trained |", "|---|---|---|"]
        for k in sorted(set(info["dev"]) | set(info["dev_untrained"])):
            before = info["dev_untrained"].get(k)
            after = info["dev"].get(k)
            lines.append(
                f"| {k} | {'' if before is None else f'{before:.4f}'} | "
                f"{'' if after is None else f'{after:.4f}'} |"
            )
    else:
        lines += ["", "Untrained: no dev results (this is the starting model, saved as is)."]
    return "\n".join(lines) + "\n"
