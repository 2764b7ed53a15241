"""What both architectures' training shares: the dev tuples and their metrics, the schedule,
checkpoints and the trainer callbacks. The stages are in `train.py`, each architecture's
dataset, loss, trainer and evaluator in its module under `rerank_sweeps/archs/`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rerank_sweeps.config import UserError
from rerank_sweeps.data import NTuple, normalize
from rerank_sweeps.machine import resolve_bf16

if TYPE_CHECKING:
    from rerank_sweeps.config import RunConfig

DEV_NAME = "dev"
AT_K = 10
DEV_METRIC = f"eval_{DEV_NAME}_ndcg@{AT_K}"  # what picks the best checkpoint and feeds pruners


def ntuple_columns(rows: Sequence[NTuple], what: str) -> dict[str, list[str]]:
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


def common_training_args(
    conf: RunConfig, output_dir: Path, sched: dict[str, int], bf16: bool, has_dev: bool
) -> dict[str, Any]:
    """The TrainingArguments both trainers share (each architecture adds its own)."""
    import torch

    return {
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


def clean_dev(dev: Sequence[NTuple]) -> list[NTuple]:
    """Dev rows whose negatives never repeat the positive (or each other): a copy of the
    positive among the negatives would make a perfect reranker look wrong."""
    rows = []
    for t in dev:
        seen = {normalize(t.positive)}
        negatives = []
        for n in t.negatives:
            if normalize(n) not in seen:
                seen.add(normalize(n))
                negatives.append(n)
        if negatives:
            rows.append(NTuple(t.question, t.positive, negatives))
    return rows


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


def mean_metrics(per_query: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over queries."""
    return {k: float(np.mean([m[k] for m in per_query])) for k in per_query[0]}


def evaluate_dev(evaluator: Any, model: Any) -> dict[str, float]:
    """Dev metrics of `model`, keys without the evaluator's name prefix."""
    if evaluator is None:
        return {}
    import torch

    with torch.inference_mode():
        metrics = evaluator(model)
    prefix = DEV_NAME + "_"
    return {k.removeprefix(prefix): round(float(v), 6) for k, v in metrics.items()}


def use_bf16(setting: str) -> bool:
    """bf16 for training: `true`/`false`, or `auto` = whether this device computes bf16 natively."""
    import torch

    return resolve_bf16(setting, "cuda" if torch.cuda.is_available() else "cpu")


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
    from rerank_sweeps.wandb_mirror import train_log_callback

    callbacks.append(train_log_callback())  # the curves into our W&B run (a no-op without one)
    return callbacks + ([by_time] if by_time is not None else [])
