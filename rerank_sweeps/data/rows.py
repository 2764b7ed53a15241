"""The data stages' records, and the identity of a text (`normalize`, `answer_key`).

A source gives `SourceRows`; the split turns them into `QAPair`s, `EvalQuery`s and `Doc`s
(a `Split`); mining gives `NTuple`s (`Negatives`). Answers that are equal after `normalize`
form one relevance set, named by `answer_key`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class QAPair:
    """A training or dev row; `answer_key` names the answer's relevance set."""

    qid: str
    question: str
    answer: str
    answer_key: str


@dataclass(frozen=True)
class EvalQuery:
    """An eval query and the corpus ids that count as hits."""

    qid: str
    question: str
    relevant: list[str]


@dataclass(frozen=True)
class Doc:
    """A corpus document (a row of the LanceDB table)."""

    id: str
    text: str


@dataclass
class Split:
    """The four parts of a split artifact."""

    train: list[QAPair]
    dev: list[QAPair]
    eval: list[EvalQuery]
    corpus: list[Doc]


@dataclass(frozen=True)
class NTuple:
    """A question, its positive answer and hard negatives (most similar first)."""

    question: str
    positive: str
    negatives: list[str]


@dataclass
class Negatives:
    """Mined training and dev tuples."""

    train: list[NTuple]
    dev: list[NTuple]


@dataclass
class SourceRows:
    """What a source gives: pairs, answers with no question (distractors), skipped counts.

    `train_pairs` are pairs fit to train on but not to ask in eval or dev (pydoc: private
    names' docstrings), so the split uses them for training only.
    """

    pairs: list[tuple[str, str]]
    extra_answers: list[str] = field(default_factory=list)
    train_pairs: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    rows_read: int = 0

    def collect(self, records: Iterable[dict[str, Any]], qcol: str, acol: str) -> None:
        """Add each record's (question, answer) text fields as a pair, or count why not."""
        for record in records:
            self.rows_read += 1
            question, q_reason = _text_or_reason(record.get(qcol))
            answer, a_reason = _text_or_reason(record.get(acol))
            reason = q_reason or a_reason
            if reason is not None or question is None or answer is None:
                self.skipped[reason or "empty field"] += 1
                continue
            self.pairs.append((question, answer))


def _text_or_reason(value: Any) -> tuple[str | None, str | None]:
    if value is None:
        return None, "empty field"
    if not isinstance(value, str):
        return None, "non-text field"
    if not value.strip():
        return None, "empty field"
    return value.strip(), None


def normalize(text: str) -> str:
    """Lowercase, collapse whitespace and strip punctuation at both ends: the identity of a text."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = " ".join(text.split())
    start, end = 0, len(text)
    while start < end and _is_edge_junk(text[start]):
        start += 1
    while end > start and _is_edge_junk(text[end - 1]):
        end -= 1
    return text[start:end]


def _is_edge_junk(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def answer_key(answer: str) -> str:
    """The relevance-set id of an answer: a hash of its normalised text (stable across runs)."""
    return hashlib.sha1(normalize(answer).encode()).hexdigest()[:16]
