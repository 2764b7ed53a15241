"""Distillation: where teacher scores come from, and the cached stage that stores them.

The teacher (`arch.teacher`) is parsed in `teacher` and checked in `validation`.

`teacher_scores_stage` scores each training tuple's (question, positive, negatives...) with
the teacher once, in fp32, into its own artifact (key: the negatives artifact and the
teacher's identity). A teacher trained in the same job is trained first, by
`train.model_stage`, which hands its model artifact in. The losses that read the scores (the
architectures' `teacher_losses`) build their datasets with `distill_data`'s
`margin_mse_rows`, `mse_pairs` and `distillation_rows`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rerank_sweeps.archs import get_arch, load_reranker
from rerank_sweeps.cache import MARKER, Artifact, Cache
from rerank_sweeps.config import RunConfig, UserError
from rerank_sweeps.console import progress
from rerank_sweeps.data import NTuple, load_miner, load_negatives, miner_config
from rerank_sweeps.teacher import MINER, TeacherSpec, parse_teacher

log = logging.getLogger(__name__)

TEACHER_SCORES_VERSION = 1
# Questions scored per call of the teacher (one progress-bar step).
_CHUNK = 64


# ----------------------------------------------------------------------------- identity


def _dir_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of a directory's files: a retrained or replaced
    model is a new teacher (cheap: no weights are read)."""
    entries = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        entries.append(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:20]


def teacher_identity(
    conf: RunConfig, spec: TeacherSpec, teacher_art: Artifact | None = None
) -> dict[str, Any]:
    """What the teacher's scores depend on (the teacher scores artifact's key config)."""
    if spec.kind == MINER:
        mining = miner_config(conf)
        return {"kind": MINER, "model_id": mining.model_id, "max_seq_length": mining.max_seq_length}
    if spec.kind == "trained":
        assert teacher_art is not None
        # The model artifact is an input of the scores stage as well; named here so that
        # the student's reranker.json says which model taught it.
        arch = spec.train["arch"] if spec.train else None
        return {"kind": "trained", "arch": arch, "model": teacher_art.key}
    path = Path(str(spec.path))
    marker = path / MARKER
    if marker.is_file():  # a cache artifact: content-addressed by its key
        key = json.loads(marker.read_text()).get("key", path.name)
        return {"kind": spec.model_kind, "artifact": key}
    return {"kind": spec.model_kind, "path": str(path), "files": _dir_fingerprint(path)}


# ----------------------------------------------------------------------------- scoring


def miner_scorer(conf: RunConfig) -> Callable[[list[str], list[str]], list[float]]:
    """Cosine similarity of (query, text) pairs under the mining bi-encoder, in fp32."""
    import numpy as np

    # fp32 whatever mining.bf16 says: the scores are training targets, stored once.
    model, _ = load_miner(replace(miner_config(conf), bf16="false"))

    def score(queries: list[str], texts: list[str]) -> list[float]:
        unique = list(dict.fromkeys([*queries, *texts]))
        vectors = model.encode(
            unique,
            batch_size=conf.mining.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)
        row = {text: i for i, text in enumerate(unique)}
        q = vectors[[row[t] for t in queries]]
        d = vectors[[row[t] for t in texts]]
        return [float(v) for v in np.sum(q * d, axis=1)]

    return score


def reranker_scorer(
    conf: RunConfig, spec: TeacherSpec, teacher_art: Artifact | None
) -> Callable[[list[str], list[str]], list[float]]:
    """A cross-encoder's raw logit or a ColBERT's MaxSim per pair, through our LanceDB
    reranker adapters (the scoring the evaluation uses), in fp32."""
    options = {"device": conf.eval.device, "bf16": False, "batch_size": conf.eval.batch_size}
    if teacher_art is not None:
        reranker = load_reranker(teacher_art.path, **options)
    else:
        path = Path(str(spec.path))
        if (path / "reranker.json").is_file():
            reranker = load_reranker(path, **options)
        else:
            reranker = get_arch(str(spec.model_kind)).reranker_class()(path, **options)

    def score(queries: list[str], texts: list[str]) -> list[float]:
        return [float(v) for v in reranker.score_pairs(queries, texts)]

    return score


def score_tuples(
    rows: Sequence[NTuple], score: Callable[[list[str], list[str]], list[float]]
) -> list[list[float]]:
    """[positive, *negatives] scores of every tuple, in chunks, with a progress bar."""
    out: list[list[float]] = []
    with progress(total=len(rows), desc="teacher scores", unit="question") as bar:
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            queries = [t.question for t in chunk for _ in range(1 + len(t.negatives))]
            texts = [d for t in chunk for d in [t.positive, *t.negatives]]
            flat = score(queries, texts)
            offset = 0
            for t in chunk:
                n = 1 + len(t.negatives)
                out.append(flat[offset : offset + n])
                offset += n
            bar.update(len(chunk))
    return out


def _agreement(scores: Sequence[Sequence[float]]) -> dict[str, float | None]:
    """How far the teacher agrees with the labels: a teacher that does not put the positive
    first teaches the student to rank it lower."""
    if not scores:
        return {"positive_first": None, "mean_margin": None}
    first = [all(s[0] > x for x in s[1:]) for s in scores]
    margins = [s[0] - x for s in scores for x in s[1:]]
    return {
        "positive_first": round(sum(first) / len(first), 4),
        "mean_margin": round(sum(margins) / len(margins), 4) if margins else None,
    }


# ----------------------------------------------------------------------------- the stage


def teacher_scores_stage(
    conf: RunConfig,
    cache: Cache,
    neg_art: Artifact,
    *,
    teacher_model: Artifact | None = None,
) -> Artifact:
    """The teacher's scores of every training tuple (scores.jsonl, stats.json), cached.

    Key: the negatives artifact and the teacher's identity (the miner's id, a model
    artifact's key, a directory's path and file fingerprint, or the trained teacher's model
    artifact `teacher_model`, trained first by `train.model_stage`).
    """
    spec = parse_teacher(conf.arch.teacher)
    if spec is None:
        raise UserError(f"arch.loss={conf.arch.loss!r} needs arch.teacher")
    inputs: list[Artifact] = [neg_art]
    teacher_art = None
    if spec.kind == "trained":
        if teacher_model is None:
            raise ValueError("a teacher trained here needs its model artifact (teacher_model)")
        teacher_art = teacher_model
        inputs.append(teacher_art)
    identity = teacher_identity(conf, spec, teacher_art)

    def build(out_dir: Path, work_dir: Path) -> None:
        del work_dir
        rows = load_negatives(neg_art).train
        started = time.perf_counter()
        if spec.kind == MINER:
            scorer = miner_scorer(conf)
        else:
            scorer = reranker_scorer(conf, spec, teacher_art)
        scores = score_tuples(rows, scorer)
        with (out_dir / "scores.jsonl").open("w", encoding="utf-8") as f:
            for t, s in zip(rows, scores, strict=True):
                f.write(json.dumps({"question": t.question, "scores": s}) + "\n")
        stats = {
            "teacher": identity,
            "spec": spec.describe(),
            "rows": len(rows),
            "seconds": round(time.perf_counter() - started, 3),
            **_agreement(scores),
        }
        (out_dir / "stats.json").write_text(json.dumps(stats, indent=2, default=str))
        log.info(
            "teacher scores: %d tuples by %s in %.1fs (positive first in %s of them)",
            len(rows),
            identity["kind"],
            stats["seconds"],
            stats["positive_first"],
        )

    return cache.stage("teacher_scores", TEACHER_SCORES_VERSION, identity, inputs, build)
