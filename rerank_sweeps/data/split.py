"""The leakage-free split of a source's rows into train, dev, eval queries and a corpus.

The split is deterministic from the seed. Answers that are equal after `normalize` form one
relevance set (`answer_key`); rows that share a relevance set or a normalised question are
joined into one group, and whole groups go to one role (eval, dev, train or distractor), so
no eval question or eval answer is ever seen in training, as a positive or as a negative.
Eval queries are judged by ids: every corpus document of the query's relevance sets counts.
A source's training-only pairs (`SourceRows.train_pairs`) take no part in the grouping: they
fill the training rows the source's own questions leave (`num_train`), minus any that shares
a question or an answer with an eval or dev query; their answers may also be distractors,
as the texts retriever mining draws negatives from are.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import DataConfig, RunConfig, UserError
from rerank_sweeps.data.files import read_part, write_jsonl
from rerank_sweeps.data.registry import load_source, source_fingerprint
from rerank_sweeps.data.rows import (
    Doc,
    EvalQuery,
    QAPair,
    SourceRows,
    Split,
    answer_key,
    normalize,
)

log = logging.getLogger(__name__)

SPLIT_VERSION = 1


@dataclass
class _Row:
    question: str | None  # None: an answer with no question (a distractor only)
    answer: str
    norm_question: str | None
    key: str


def _groups(rows: list[_Row]) -> list[list[int]]:
    """Rows joined when they share a relevance set or a normalised question (union-find)."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_of: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        links = [("a", row.key)] + ([("q", row.norm_question)] if row.norm_question else [])
        for link in links:
            j = first_of.setdefault(link, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(rows)):
        members[find(i)].append(i)
    return list(members.values())


def _target_sizes(available: int, data: DataConfig) -> tuple[int, int, int, bool]:
    """(eval, dev, train) sizes; shrunk in proportion when the source has too few question rows.

    `available` counts the training-only pairs too: they fill training rows.
    """
    wanted = data.num_eval + data.num_dev + data.num_train
    if available >= wanted:
        return data.num_eval, data.num_dev, data.num_train, False
    factor = available / wanted
    n_eval = max(1, int(data.num_eval * factor))
    n_dev = int(data.num_dev * factor)
    n_train = max(1, int(data.num_train * factor))
    return n_eval, n_dev, n_train, True


def make_split(source: SourceRows, data: DataConfig, seed: int) -> tuple[Split, dict[str, Any]]:
    """Split pairs into train/dev/eval/corpus, disjoint by normalised text (see module docs)."""
    stats: dict[str, Any] = {
        "rows_read": source.rows_read,
        "pairs_read": len(source.pairs),
        "extra_answers_read": len(source.extra_answers),
        "train_only_pairs_read": len(source.train_pairs),
        "skipped": dict(sorted(source.skipped.items())),
    }
    rows: list[_Row] = []
    seen_pairs: set[tuple[str, str]] = set()
    dropped = Counter[str]()
    for question, answer in source.pairs:
        nq, na = normalize(question), normalize(answer)
        if not nq or not na:
            dropped["empty after normalisation"] += 1
            continue
        if (nq, na) in seen_pairs:
            dropped["duplicate pair"] += 1
            continue
        seen_pairs.add((nq, na))
        rows.append(_Row(question, answer, nq, answer_key(answer)))
    for answer in source.extra_answers:
        if not normalize(answer):
            dropped["empty after normalisation"] += 1
            continue
        rows.append(_Row(None, answer, None, answer_key(answer)))
    stats["dropped"] = dict(sorted(dropped.items()))

    groups = _groups(rows)
    # A stable order independent of how the source happened to list rows, then the seed's.
    groups.sort(key=lambda g: min(rows[i].key for i in g))
    random.Random(seed).shuffle(groups)
    question_rows = sum(1 for r in rows if r.question is not None)
    n_eval, n_dev, n_train, shrunk = _target_sizes(question_rows + len(source.train_pairs), data)
    if question_rows == 0 or n_eval < 1:
        raise UserError(
            f"the {data.source} source gave no usable question/answer rows "
            f"(read {source.rows_read}, skipped {dict(source.skipped)})"
        )

    eval_groups: list[list[int]] = []
    dev_rows: list[int] = []
    train_rows: list[int] = []
    distractor_groups: list[list[int]] = []
    eval_questions: dict[str, list[int]] = {}
    for group in groups:
        asked = [i for i in group if rows[i].question is not None]
        if not asked:
            distractor_groups.append(group)
        elif len(eval_questions) < n_eval:
            eval_groups.append(group)
            for i in asked:
                eval_questions.setdefault(rows[i].norm_question or "", []).append(i)
        elif len(dev_rows) < n_dev:
            dev_rows.extend(asked)
        elif len(train_rows) < n_train:
            train_rows.extend(asked)
        else:
            distractor_groups.append(group)
    dev_rows, train_rows = dev_rows[:n_dev], train_rows[:n_train]
    # Groups already keep questions apart; this is the stated invariant, checked once more.
    leaked = {i for i in dev_rows + train_rows if rows[i].norm_question in eval_questions}
    dev_rows = [i for i in dev_rows if i not in leaked]
    train_rows = [i for i in train_rows if i not in leaked]
    stats["dropped_train_dev_rows_with_eval_question"] = len(leaked)
    held_out = [rows[i] for g in eval_groups for i in g] + [rows[i] for i in dev_rows]
    train_only = _train_only_rows(
        source.train_pairs, n_train - len(train_rows), held_out, seen_pairs, seed
    )
    stats["train_only_used"] = len(train_only)

    rng = random.Random(seed + 1)
    eval_docs = [rows[i] for g in eval_groups for i in g]
    distractors: list[_Row] = []
    seen_keys = set()
    room = max(0, data.corpus_size - len(eval_docs))
    for group in distractor_groups:
        for i in group:
            # One document per distractor relevance set: copies of an irrelevant text add nothing.
            if len(distractors) < room and rows[i].key not in seen_keys:
                seen_keys.add(rows[i].key)
                distractors.append(rows[i])
    docs = eval_docs + distractors
    order = list(range(len(docs)))
    rng.shuffle(order)  # ids carry no hint of relevance
    doc_ids = {pos: f"c{rank:07d}" for rank, pos in enumerate(order)}
    ids_by_key: dict[str, list[str]] = defaultdict(list)
    for pos, row in enumerate(docs):
        ids_by_key[row.key].append(doc_ids[pos])
    corpus = sorted(
        (Doc(doc_ids[pos], row.answer) for pos, row in enumerate(docs)), key=lambda d: d.id
    )

    queries: list[EvalQuery] = []
    for members in list(eval_questions.values())[:n_eval]:
        keys = dict.fromkeys(rows[i].key for i in members)
        relevant = sorted(doc_id for key in keys for doc_id in ids_by_key[key])
        question = rows[members[0]].question or ""
        queries.append(EvalQuery(f"q{len(queries):06d}", question, relevant))

    def pairs(indices: list[int], prefix: str) -> list[QAPair]:
        return [
            QAPair(f"{prefix}{n:06d}", rows[i].question or "", rows[i].answer, rows[i].key)
            for n, i in enumerate(indices)
        ]

    train = pairs(train_rows, "t") + [
        QAPair(f"t{n:06d}", row.question or "", row.answer, row.key)
        for n, row in enumerate(train_only, start=len(train_rows))
    ]
    split = Split(train, pairs(dev_rows, "d"), queries, corpus)
    requested = {k: getattr(data, k) for k in ("num_train", "num_dev", "num_eval", "corpus_size")}
    sizes = {
        "num_train": len(split.train),
        "num_dev": len(split.dev),
        "num_eval": len(split.eval),
        "corpus_size": len(split.corpus),
    }
    stats |= {
        "requested": requested,
        "sizes": sizes,
        "question_rows": question_rows,
        "groups": len(groups),
        "eval_corpus_docs": len(eval_docs),
        "distractors": len(distractors),
        "mean_relevant_per_query": round(sum(len(q.relevant) for q in queries) / len(queries), 3),
        "shrunk": shrunk,
    }
    _warn_if_short(requested, sizes, shrunk, question_rows)
    if not split.eval or not split.train:
        raise UserError(
            f"the {data.source} source is too small: {question_rows} usable question rows give "
            f"{len(split.eval)} eval queries and {len(split.train)} training rows"
        )
    return split, stats


def _train_only_rows(
    train_pairs: list[tuple[str, str]],
    room: int,
    held_out: list[_Row],
    seen_pairs: set[tuple[str, str]],
    seed: int,
) -> list[_Row]:
    """Up to `room` training-only pairs, in a seeded order, none sharing a normalised question
    or a relevance set with a held-out (eval or dev) row, and none a copy of a source pair."""
    questions = {r.norm_question for r in held_out if r.norm_question}
    keys = {r.key for r in held_out}
    order = list(range(len(train_pairs)))
    random.Random(seed + 2).shuffle(order)
    chosen: list[_Row] = []
    for i in order:
        if len(chosen) >= room:
            break
        question, answer = train_pairs[i]
        nq, na = normalize(question), normalize(answer)
        key = answer_key(answer)
        if not nq or not na or (nq, na) in seen_pairs or nq in questions or key in keys:
            continue
        seen_pairs.add((nq, na))
        chosen.append(_Row(question, answer, nq, key))
    return chosen


def _warn_if_short(
    requested: dict[str, int], sizes: dict[str, int], shrunk: bool, rows: int
) -> None:
    short = {k: (sizes[k], v) for k, v in requested.items() if sizes[k] < v}
    if short:
        what = ", ".join(f"{k} {got} < {want}" for k, (got, want) in short.items())
        why = (
            f"the source has only {rows} usable question rows" if shrunk else "the source is small"
        )
        log.warning("split shrunk: %s (%s)", what, why)


def write_split(split: Split, stats: dict[str, Any], out_dir: Path) -> None:
    """Write a split as the artifact files train/dev/eval/corpus.jsonl and stats.json."""
    write_jsonl(out_dir / "train.jsonl", (asdict(p) for p in split.train))
    write_jsonl(out_dir / "dev.jsonl", (asdict(p) for p in split.dev))
    write_jsonl(out_dir / "eval.jsonl", (asdict(q) for q in split.eval))
    write_jsonl(out_dir / "corpus.jsonl", (asdict(d) for d in split.corpus))
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False))


def split_stage(conf: RunConfig, cache: Cache) -> Artifact:
    """The cached split of the configured source (key: conf.data, the seed, the source's identity)."""
    config = {"data": source_fingerprint(conf.data), "seed": conf.seed}

    def build(out_dir: Path, work_dir: Path) -> None:
        started = time.perf_counter()
        source = load_source(conf.data, conf.seed)
        split, stats = make_split(source, conf.data, conf.seed)
        stats["seconds"] = round(time.perf_counter() - started, 3)
        write_split(split, stats, out_dir)
        log.info(
            "split: %d train%s, %d dev, %d eval queries, %d corpus docs (skipped %s)",
            len(split.train),
            f" ({stats['train_only_used']} of them training-only pairs)"
            if stats["train_only_used"]
            else "",
            len(split.dev),
            len(split.eval),
            len(split.corpus),
            dict(source.skipped) or "none",
        )

    return cache.stage("split", SPLIT_VERSION, config, [], build)


def load_split(path_or_artifact: Path | str | Artifact) -> Split:
    """Read a split artifact written by `split_stage`."""
    return Split(
        train=read_part(path_or_artifact, "train", QAPair),
        dev=read_part(path_or_artifact, "dev", QAPair),
        eval=read_part(path_or_artifact, "eval", EvalQuery),
        corpus=read_part(path_or_artifact, "corpus", Doc),
    )
