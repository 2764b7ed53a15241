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
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rerank_sweeps.archs import ARCHITECTURES, get_arch
from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import RunConfig
from rerank_sweeps.console import use_quiet_progress
from rerank_sweeps.data import NTuple, load_negatives
from rerank_sweeps.devsignal import DevArtifacts, DevData, candidate_evaluator, finish_training
from rerank_sweeps.distill import teacher_scores_stage
from rerank_sweeps.distill_data import TeacherScores, load_teacher_scores
from rerank_sweeps.model_card import save_reranker
from rerank_sweeps.models import hub_reachable, hub_unavailable, resolve_model
from rerank_sweeps.score_input import score_input_meta
from rerank_sweeps.teacher import loss_uses_teacher, parse_teacher, teacher_run_config, uses_teacher
from rerank_sweeps.training import (
    AT_K,
    DEV_NAME,
    clean_dev,
    common_training_args,
    evaluate_dev,
    last_complete_checkpoint,
    schedule,
    trainer_callbacks,
    use_bf16,
)

log = logging.getLogger(__name__)

MODEL_VERSION = 1
UNTRAINED_VERSION = 1
# Fields of ArchConfig that never change the trained weights: left out of every cache key.
_NOT_IN_KEY = ("checkpoint_minutes",)


# ----------------------------------------------------------------------------- stages


def arch_key(conf: RunConfig) -> dict[str, Any]:
    """The ArchConfig fields this architecture reads (the others must not trigger retraining)."""
    fields = asdict(conf.arch)
    own = get_arch(conf.arch.name).own_fields
    for arch in ARCHITECTURES.values():  # what only the other architectures read
        for name in set(arch.own_fields) - set(own):
            fields.pop(name, None)
    for name in _NOT_IN_KEY:
        fields.pop(name, None)
    fields["loss"] = loss_name(conf)  # null and the arch's default name train the same model
    if fields["loss"] != "bce":
        fields.pop("pos_weight", None)  # read by BinaryCrossEntropyLoss only
    if fields.pop("score_in_input", False):  # off: the keys of models trained before it
        fields |= score_input_meta(conf)  # on: which embedder's scores the model reads
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
    return get_arch(conf.arch.name).loss_name(conf)


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
        # A teacher trained in this job is trained first, by this same stage.
        spec = parse_teacher(conf.arch.teacher)
        teacher_model = None
        if spec is not None and spec.kind == "trained":
            teacher_conf = teacher_run_config(conf, spec)
            teacher_model = model_stage(teacher_conf, cache, split_art, neg_art, dev)
        teacher_art = teacher_scores_stage(conf, cache, neg_art, teacher_model=teacher_model)
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
        **{name: getattr(conf.arch, name) for name in get_arch(conf.arch.name).saved_fields},
        **score_input_meta(conf),
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


# ----------------------------------------------------------------------------- models


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
        return resolved, _offline_env() or not hub_reachable()
    if _offline_env():
        raise hub_unavailable(model_id, RuntimeError("HF_HUB_OFFLINE is set and it is not cached"))
    if not hub_reachable():
        raise hub_unavailable(model_id, ConnectionError("huggingface.co is unreachable"))
    return resolved, False


def start_model_id(conf: RunConfig) -> str:
    """The model training starts from: the base LM, or the pretrained reranker (init=pretrained)."""
    if conf.init == "pretrained":
        field = get_arch(conf.arch.name).pretrained_field
        pretrained = getattr(conf.base, field) if field else None
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
        model = get_arch(conf.arch.name).load_start_model(path, conf, local_only)
    except OSError as err:  # missing files of a hub id, or the hub failing mid-download
        raise hub_unavailable(model_id, err) from None
    return model, model_id


# ----------------------------------------------------------------------------- evaluation


def make_evaluator(conf: RunConfig, dev: Sequence[NTuple]) -> Any:
    """The mined-tuple dev evaluator of this architecture (positive + hard negatives)."""
    arch = get_arch(conf.arch.name)
    return arch.tuple_evaluator(arch.input_tuples(conf, clean_dev(dev)), DEV_NAME, AT_K)


# ----------------------------------------------------------------------------- training


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
    arch = get_arch(conf.arch.name)
    train = arch.input_tuples(conf, train)  # same order: teacher scores stay aligned
    dataset, loss = arch.dataset_and_loss(conf, model, train, teacher_scores)
    sched = schedule(len(dataset), conf)
    common = common_training_args(
        conf, output_dir, sched, use_bf16(conf.arch.bf16), evaluator is not None
    )
    trainer = arch.trainer(
        model=model,
        args=arch.training_arguments(conf, common),
        train_dataset=dataset,
        loss=loss,
        evaluator=evaluator,
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
    dev_rows = clean_dev(dev)
    if dev_data is not None and dev_data.items:
        evaluator = candidate_evaluator(
            conf.arch.name, dev_data, conf.eval.batch_size, _scoring_meta(conf)
        )
    else:
        evaluator = make_evaluator(conf, dev_rows) if dev_rows else None
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
    save_reranker(model, out_dir, info, conf, num_train=num_train, num_dev=len(dev_rows))
    return info


def _step_of(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    try:
        return int(Path(checkpoint).name.split("-")[1])
    except (IndexError, ValueError):
        return None


# ----------------------------------------------------------------------------- saving


def _scoring_meta(conf: RunConfig) -> dict[str, Any]:
    """The reranker.json fields a reranker reads to score (lengths, the score in the input):
    the saved model's and the in-training dev evaluator's alike."""
    return {
        "max_length": conf.arch.max_length,
        "query_length": conf.arch.query_length,
        **score_input_meta(conf),
    }


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
        **_scoring_meta(conf),
        "dev": dev,
        "dev_untrained": dev_untrained,
        **extra,
    }
