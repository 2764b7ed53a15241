"""Teacher scores as training data: the scores artifact read back, and the distillation
datasets built from it.

The low half of distillation, which the architectures build their datasets with: it imports
nothing above the configuration. Where the scores come from (the teacher, the cached stage)
is `distill`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rerank_sweeps.cache import Artifact
from rerank_sweeps.config import UserError

if TYPE_CHECKING:
    from rerank_sweeps.data import NTuple


@dataclass
class TeacherScores:
    """Teacher scores of the training tuples: `scores[i]` = [positive, *negatives] of tuple i."""

    scores: list[list[float]]
    identity: dict[str, Any]


def load_teacher_scores(art: Artifact | Path | str, rows: Sequence[NTuple]) -> TeacherScores:
    """The scores of a teacher scores artifact, checked against the tuples they belong to."""
    root = art.path if isinstance(art, Artifact) else Path(art)
    lines = (root / "scores.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    if len(records) != len(rows) or any(
        r["question"] != t.question or len(r["scores"]) != 1 + len(t.negatives)
        for r, t in zip(records, rows, strict=False)
    ):
        raise UserError(f"{root}: teacher scores do not match the training tuples")
    stats = json.loads((root / "stats.json").read_text())
    return TeacherScores([r["scores"] for r in records], stats.get("teacher", {}))


# ----------------------------------------------------------------------------- datasets


def _fixed_width(
    rows: Sequence[NTuple], scores: Sequence[Sequence[float]], what: str
) -> tuple[int, list[list[float]]]:
    """The fewest negatives of any row (every row must have as many texts for the losses'
    batching), and each row's scores cut to [positive, first n negatives]."""
    if len(scores) != len(rows):
        raise UserError(f"{what}: {len(scores)} teacher score rows for {len(rows)} tuples")
    n = min((len(t.negatives) for t in rows), default=0)
    if n == 0:
        raise UserError(f"{what} training needs at least one negative per training question")
    return n, [list(s[: 1 + n]) for s in scores]


def margin_mse_rows(
    rows: Sequence[NTuple], scores: Sequence[Sequence[float]], scale: float = 1.0
) -> dict[str, list]:
    """MarginMSELoss rows: query, positive, negative_1..n and `label`, the teacher's margins
    scale * (score(positive) - score(negative_i)) for i in 1..n."""
    n, cut = _fixed_width(rows, scores, "arch.loss=margin_mse")
    columns: dict[str, list] = {"query": [], "positive": []}
    for i in range(1, n + 1):
        columns[f"negative_{i}"] = []
    columns["label"] = []
    for t, s in zip(rows, cut, strict=True):
        columns["query"].append(t.question)
        columns["positive"].append(t.positive)
        for i in range(n):
            columns[f"negative_{i + 1}"].append(t.negatives[i])
        columns["label"].append([scale * (s[0] - x) for x in s[1:]])
    return columns


def mse_pairs(
    rows: Sequence[NTuple], scores: Sequence[Sequence[float]], scale: float = 1.0
) -> dict[str, list]:
    """MSELoss pairs: (query, passage) with `label` = scale * the teacher's score."""
    if len(scores) != len(rows):
        raise UserError(f"arch.loss=mse: {len(scores)} teacher score rows for {len(rows)} tuples")
    query, passage, label = [], [], []
    for t, s in zip(rows, scores, strict=True):
        for text, value in zip([t.positive, *t.negatives], s, strict=True):
            query.append(t.question)
            passage.append(text)
            label.append(scale * value)
    return {"query": query, "passage": passage, "label": label}


def distillation_rows(
    rows: Sequence[NTuple], scores: Sequence[Sequence[float]], scale: float = 1.0
) -> dict[str, list]:
    """PyLate Distillation rows: query, documents [positive, *negatives[:n]] and `scores`
    (scale * the teacher's scores of those documents, the KL target's logits)."""
    n, cut = _fixed_width(rows, scores, "arch.loss=distillation")
    return {
        "query": [t.question for t in rows],
        "documents": [[t.positive, *t.negatives[:n]] for t in rows],
        "scores": [[scale * x for x in s] for s in cut],
    }
