"""Question/answer sources, the leakage-free split, and hard-negative mining.

Four sources give (question, answer) pairs: WordNet 3.0 (Debian's wordnet-base; every sense
with an example becomes `what does "WORD" mean in "EXAMPLE"?` -> its definition), Python's
standard-library docstrings (rerank_sweeps/pydocs.py; summary -> the rest), a Hugging
Face hub data set (`datasets.load_dataset`), and local jsonl/parquet/csv files.

The split is deterministic from the seed. Answers that are equal after `normalize` form one
relevance set (`answer_key`); rows that share a relevance set or a normalised question are
joined into one group, and whole groups go to one role (eval, dev, train or distractor), so
no eval question or eval answer is ever seen in training, as a positive or as a negative.
Eval queries are judged by ids: every corpus document of the query's relevance sets counts.

Hard negatives are mined with sentence-transformers' `mine_hard_negatives` and an embedding
model that is independent of the reranker being trained; `static:<model id>` distils a
static (model2vec) embedding from that model once and mines with it in seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import time
import unicodedata
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from filelock import FileLock

from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import DataConfig, MiningConfig, RunConfig, UserError

log = logging.getLogger(__name__)

SPLIT_VERSION = 1
NEGATIVES_VERSION = 2  # 2: dev rows keep between `negatives` and dev_negatives
STATIC_PREFIX = "static:"
STATIC_DISTILL_VERSION = 1
STATIC_PCA_DIMS = 256
WORDNET_DEFAULT = Path("/usr/share/wordnet")
WORDNET_POS = ("noun", "verb", "adj", "adv")


# ---------------------------------------------------------------------------------------------
# Records


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
    """What a source gives: pairs, answers with no question (distractors), skipped counts."""

    pairs: list[tuple[str, str]]
    extra_answers: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    rows_read: int = 0


# ---------------------------------------------------------------------------------------------
# Normalisation


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


# ---------------------------------------------------------------------------------------------
# WordNet

_ADJ_MARKER = re.compile(r"\([a-z]+\)$")
_QUOTED = re.compile(r'"([^"]+)"')
# Simple inflections: a word matches a lemma word that is a prefix of it (after dropping a
# final e/y, as in breathe -> breathing, carry -> carried) followed by at most four letters.
_MAX_SUFFIX = 4


@dataclass(frozen=True)
class WordNetSynset:
    """The parts of one line of a WordNet data.* file that the task uses."""

    offset: str
    pos: str
    lemmas: list[str]
    definition: str
    examples: list[str]


def parse_wordnet_line(line: str) -> WordNetSynset | None:
    """Parse one data.{noun,verb,adj,adv} line; None for licence header lines and blank lines."""
    if not line.strip() or line.startswith("  "):
        return None
    head, sep, gloss = line.partition(" | ")
    if not sep:
        return None
    fields = head.split()
    offset, pos, word_count = fields[0], fields[2], int(fields[3], 16)
    words = fields[4 : 4 + 2 * word_count : 2]
    lemmas = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in words]
    gloss = gloss.strip()
    definition, quote, rest = gloss.partition('"')
    definition = definition.strip().rstrip(";").strip()
    examples = [e.strip() for e in _QUOTED.findall(quote + rest)] if quote else []
    return WordNetSynset(offset, pos, lemmas, definition, [e for e in examples if e])


def _word_pattern(word: str, irregular: Iterable[str]) -> str:
    stem = word[:-1] if len(word) > 3 and word[-1] in "ey" else word
    forms = [re.escape(stem) + rf"\w{{0,{_MAX_SUFFIX}}}"]
    forms += [re.escape(form) for form in irregular]
    return "(?:" + "|".join(forms) + ")"


def lemma_in_example(
    lemma: str, example: str, irregular: dict[str, list[str]] | None = None
) -> bool:
    """Whether `lemma` (or a simple inflection of each of its words) occurs in `example`."""
    irregular = irregular or {}
    words = lemma.lower().split()
    if not words:
        return False
    parts = [_word_pattern(w, irregular.get(w, [])) for w in words]
    pattern = r"(?<!\w)" + r"[\s\-]+".join(parts) + r"(?!\w)"
    return re.search(pattern, example.lower()) is not None


def wordnet_question(
    synset: WordNetSynset, irregular: dict[str, list[str]] | None = None
) -> str | None:
    """`what does "WORD" mean in "EXAMPLE"?` for the first example that contains a lemma."""
    for example in synset.examples:
        for lemma in synset.lemmas:
            if lemma_in_example(lemma, example, irregular):
                return f'what does "{lemma}" mean in "{example}"?'
    return None


def _irregular_forms(folder: Path) -> dict[str, list[str]]:
    # WordNet's exception lists (ran -> run, mice -> mouse): base form -> inflected forms.
    forms: dict[str, list[str]] = defaultdict(list)
    for pos in WORDNET_POS:
        exc = folder / f"{pos}.exc"
        if not exc.is_file():
            continue
        for line in exc.read_text(encoding="utf-8", errors="replace").splitlines():
            inflected, *bases = line.split()
            for base in bases:
                forms[base.replace("_", " ")].append(inflected.replace("_", " "))
    return forms


def wordnet_folder(path: str | None) -> Path:
    """The WordNet dictionary folder (`data.path` or Debian's), or a one-line UserError."""
    folder = Path(path).expanduser() if path else WORDNET_DEFAULT
    if not all((folder / f"data.{pos}").is_file() for pos in WORDNET_POS):
        raise UserError(
            f"WordNet 3.0 data files (data.noun, data.verb, data.adj, data.adv) not found in "
            f"{folder}: run `apt-get install wordnet-base` or set data.path to the dictionary folder"
        )
    return folder


def read_wordnet(folder: Path, max_rows: int | None = None, seed: int = 0) -> SourceRows:
    """Pairs from every synset with a usable example; definitions of the others as distractors.

    `max_rows` takes a seeded random sample of synsets: the files are ordered by part of speech
    and topic, so their first rows would be a biased slice.
    """
    irregular = _irregular_forms(folder)
    synsets: list[WordNetSynset] = []
    for pos in WORDNET_POS:
        with (folder / f"data.{pos}").open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                synset = parse_wordnet_line(line)
                if synset is not None:
                    synsets.append(synset)
    if max_rows is not None and max_rows < len(synsets):
        chosen = sorted(random.Random(seed).sample(range(len(synsets)), max_rows))
        synsets = [synsets[i] for i in chosen]
    rows = SourceRows(pairs=[], rows_read=len(synsets))
    for synset in synsets:
        if not synset.definition:
            rows.skipped["empty definition"] += 1
            continue
        question = wordnet_question(synset, irregular) if synset.examples else None
        if question is None:
            if synset.examples:
                rows.skipped["no lemma in any example (kept as distractor)"] += 1
            rows.extra_answers.append(synset.definition)
        else:
            rows.pairs.append((question, synset.definition))
    return rows


# ---------------------------------------------------------------------------------------------
# Local files and the hub


def _text_or_reason(value: Any) -> tuple[str | None, str | None]:
    if value is None:
        return None, "empty field"
    if not isinstance(value, str):
        return None, "non-text field"
    if not value.strip():
        return None, "empty field"
    return value.strip(), None


def _collect(records: Iterable[dict[str, Any]], qcol: str, acol: str, rows: SourceRows) -> None:
    for record in records:
        rows.rows_read += 1
        question, q_reason = _text_or_reason(record.get(qcol))
        answer, a_reason = _text_or_reason(record.get(acol))
        reason = q_reason or a_reason
        if reason is not None or question is None or answer is None:
            rows.skipped[reason or "empty field"] += 1
            continue
        rows.pairs.append((question, answer))


def local_format(path: Path, fmt: str | None) -> str:
    """The file format: `data.format`, else from the suffix (.jsonl/.ndjson, .parquet/.pq, .csv)."""
    if fmt:
        return fmt
    suffixes = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
    suffixes |= {".csv": "csv"}
    found = suffixes.get(path.suffix.lower())
    if found is None:
        raise UserError(
            f"cannot tell the format of data.path={str(path)!r} from its suffix: "
            "set data.format to jsonl, parquet or csv"
        )
    return found


def _check_local_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"data.path={str(path)!r} does not exist")
    if not path.is_file():
        raise UserError(f"data.path={str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise UserError(f"data.path={str(path)!r} is empty")


def check_encoding(path: Path, encoding: str) -> None:
    """A one-line UserError naming the first line that is not valid `encoding`: a wrong
    encoding would otherwise be read with replacement characters and the run would go on."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path.name}: line {number} is not valid {encoding} (byte "
                    f"{line[err.start]:#04x} at column {err.start + 1}): set data.encoding "
                    "(e.g. data.encoding=latin-1) or convert the file"
                ) from None


def _jsonl_records(
    path: Path, rows: SourceRows, max_rows: int | None, encoding: str = "utf-8"
) -> tuple[list[dict], list[str]]:
    records: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    with path.open(encoding=encoding) as handle:
        for line in handle:
            if max_rows is not None and len(records) + sum(rows.skipped.values()) >= max_rows:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                rows.rows_read += 1
                rows.skipped["invalid JSON line"] += 1
                continue
            if not isinstance(record, dict):
                rows.rows_read += 1
                rows.skipped["line is not a JSON object"] += 1
                continue
            columns.update(dict.fromkeys(record))
            records.append(record)
    return records, list(columns)


def _missing_column_error(path: Path, key: str, column: str, columns: Sequence[str]) -> UserError:
    shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
    return UserError(
        f"column {column!r} ({key}) is not in {path.name}; its columns are: {shown or '(none)'}"
    )


def read_local(
    path: Path,
    fmt: str | None,
    qcol: str,
    acol: str,
    max_rows: int | None = None,
    encoding: str = "utf-8",
) -> SourceRows:
    """(question, answer) pairs from a jsonl, parquet or csv file; bad rows skipped and counted.

    Text files must be valid `encoding` throughout: the first bad line is a one-line error.
    """
    _check_local_file(path)
    fmt = local_format(path, fmt)
    rows = SourceRows(pairs=[])
    if fmt in ("jsonl", "csv"):
        check_encoding(path, encoding)
    if fmt == "jsonl":
        records, columns = _jsonl_records(path, rows, max_rows, encoding)
        if records:
            _require_columns(path, columns, qcol, acol)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise UserError(f"cannot read {path.name} as parquet: {_first_line(err)}") from None
        columns = list(parquet.schema_arrow.names)
        _require_columns(path, columns, qcol, acol)
        table = parquet.read(columns=list(dict.fromkeys([qcol, acol])))
        if max_rows is not None:
            table = table.slice(0, max_rows)
        records = table.to_pylist()
    else:
        import pandas as pd

        try:
            frame = pd.read_csv(
                path, dtype=str, keep_default_na=False, nrows=max_rows, encoding=encoding
            )
        except Exception as err:  # pandas raises several types for a malformed file
            raise UserError(f"cannot read {path.name} as csv: {_first_line(err)}") from None
        columns = [str(c) for c in frame.columns]
        _require_columns(path, columns, qcol, acol)
        records = frame[list(dict.fromkeys([qcol, acol]))].to_dict("records")
    _collect(records, qcol, acol, rows)
    if rows.rows_read == 0:
        raise UserError(f"data.path={str(path)!r} has no rows")
    return rows


def _require_columns(path: Path, columns: Sequence[str], qcol: str, acol: str) -> None:
    for key, column in (("data.question_column", qcol), ("data.answer_column", acol)):
        if column not in columns:
            raise _missing_column_error(path, key, column, columns)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_reachable(timeout: float = 5.0) -> str | None:
    """None if the hub's host accepts a TCP connection, else why not (a quick probe, no retries)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # the probe cannot see through a proxy: let the library try
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{host}:{port} unreachable: {_first_line(err)}"


def read_hub(
    hub_id: str, split: str, qcol: str, acol: str, max_rows: int | None = None
) -> SourceRows:
    """(question, answer) pairs from `datasets.load_dataset(hub_id, split=...)`.

    Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) only the local datasets cache is tried; when
    the hub cannot be reached we stop at once with one line instead of the library's retries.
    """
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE")
    hint = "use data=local data.path=FILE or data=wordnet"
    if not offline:
        reason = _hub_reachable()
        if reason is not None:
            raise UserError(
                f"cannot load data.hub_id={hub_id!r}: the Hugging Face hub is not reachable "
                f"({reason}); set HF_HUB_OFFLINE=1 to use a cached copy, or {hint}"
            )
    import datasets

    sliced = f"{split}[:{max_rows}]" if max_rows is not None else split
    try:
        dataset = datasets.load_dataset(hub_id, split=sliced)
    except Exception as err:  # datasets raises many types (connection, not found, bad split)
        where = "offline mode and not in the local cache" if offline else _first_line(err)
        raise UserError(
            f"cannot load data.hub_id={hub_id!r} split {sliced!r}: {where}; {hint}"
        ) from None
    columns = list(dataset.column_names)
    for key, column in (("data.question_column", qcol), ("data.answer_column", acol)):
        if column not in columns:
            raise UserError(
                f"column {column!r} ({key}) is not in {hub_id}; its columns are: {', '.join(columns)}"
            )
    rows = SourceRows(pairs=[])
    questions, answers = dataset[qcol], dataset[acol]
    _collect(
        ({qcol: q, acol: a} for q, a in zip(questions, answers, strict=True)), qcol, acol, rows
    )
    return rows


def load_source(data: DataConfig, seed: int) -> SourceRows:
    """Read the configured source (`data.source`) into pairs and extra distractor answers."""
    if data.source == "wordnet":
        return read_wordnet(wordnet_folder(data.path), data.max_rows, seed)
    if data.source == "pydoc":
        from rerank_sweeps.pydocs import pydoc_folder, read_pydocs  # it imports this module

        return read_pydocs(pydoc_folder(data.path), data.max_rows, seed)
    if data.source == "hub":
        return read_hub(
            data.hub_id, data.hub_split, data.question_column, data.answer_column, data.max_rows
        )
    assert data.path is not None  # DataConfig checks this for source=local
    return read_local(
        Path(data.path).expanduser(),
        data.format,
        data.question_column,
        data.answer_column,
        data.max_rows,
        data.encoding,
    )


def source_fingerprint(data: DataConfig) -> dict[str, Any]:
    """The config the split reads, plus what identifies the source's content on disk.

    Only the keys of the configured source enter, so changing e.g. `hub_id` while reading
    WordNet never re-splits; a local file's size and mtime enter, so an edited file misses.
    """
    keys: dict[str, Any] = {
        "source": data.source,
        "max_rows": data.max_rows,
        "num_train": data.num_train,
        "num_dev": data.num_dev,
        "num_eval": data.num_eval,
        "corpus_size": data.corpus_size,
    }
    if data.source == "wordnet":
        folder = wordnet_folder(data.path)
        keys["path"] = str(folder.resolve())
        keys["files"] = {pos: (folder / f"data.{pos}").stat().st_size for pos in WORDNET_POS}
    elif data.source == "pydoc":
        from rerank_sweeps.pydocs import pydoc_fingerprint, pydoc_folder

        keys |= pydoc_fingerprint(pydoc_folder(data.path))
    elif data.source == "hub":
        keys |= {"hub_id": data.hub_id, "hub_split": data.hub_split}
        keys |= {"question_column": data.question_column, "answer_column": data.answer_column}
    else:
        assert data.path is not None
        path = Path(data.path).expanduser()
        _check_local_file(path)
        stat = path.stat()
        keys |= {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        keys |= {"format": local_format(path, data.format), "encoding": data.encoding}
        keys |= {"question_column": data.question_column, "answer_column": data.answer_column}
    return keys


# ---------------------------------------------------------------------------------------------
# The split


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
    """(eval, dev, train) sizes; shrunk in proportion when the source has too few question rows."""
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
    n_eval, n_dev, n_train, shrunk = _target_sizes(question_rows, data)
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

    split = Split(pairs(train_rows, "t"), pairs(dev_rows, "d"), queries, corpus)
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


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def write_split(split: Split, stats: dict[str, Any], out_dir: Path) -> None:
    """Write a split as the artifact files train/dev/eval/corpus.jsonl and stats.json."""
    _write_jsonl(out_dir / "train.jsonl", (asdict(p) for p in split.train))
    _write_jsonl(out_dir / "dev.jsonl", (asdict(p) for p in split.dev))
    _write_jsonl(out_dir / "eval.jsonl", (asdict(q) for q in split.eval))
    _write_jsonl(out_dir / "corpus.jsonl", (asdict(d) for d in split.corpus))
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
            "split: %d train, %d dev, %d eval queries, %d corpus docs (skipped %s)",
            len(split.train),
            len(split.dev),
            len(split.eval),
            len(split.corpus),
            dict(source.skipped) or "none",
        )

    return cache.stage("split", SPLIT_VERSION, config, [], build)


def _artifact_path(path_or_artifact: Path | str | Artifact) -> Path:
    return (
        path_or_artifact.path if isinstance(path_or_artifact, Artifact) else Path(path_or_artifact)
    )


def load_split(path_or_artifact: Path | str | Artifact) -> Split:
    """Read a split artifact written by `split_stage`."""
    root = _artifact_path(path_or_artifact)
    return Split(
        train=[QAPair(**r) for r in _read_jsonl(root / "train.jsonl")],
        dev=[QAPair(**r) for r in _read_jsonl(root / "dev.jsonl")],
        eval=[EvalQuery(**r) for r in _read_jsonl(root / "eval.jsonl")],
        corpus=[Doc(**r) for r in _read_jsonl(root / "corpus.jsonl")],
    )


# ---------------------------------------------------------------------------------------------
# Hard-negative mining


def static_model_dir(model_id: str) -> Path:
    """Where the static embedding distilled from `model_id` is kept (under models_home())."""
    from rerank_sweeps.models import models_home

    name = re.sub(r"[^A-Za-z0-9._-]+", "--", model_id)
    return models_home() / f"static-v{STATIC_DISTILL_VERSION}-pca{STATIC_PCA_DIMS}-{name}"


def distill_static(model_id: str) -> Path:
    """Distil a model2vec static embedding from `model_id` once (locked) and return its folder.

    The teacher runs in bfloat16 (faster than float32 on CPUs with native bf16 and on GPUs);
    its token embeddings are PCA-reduced afterwards, so the precision loss is noise.
    """
    target = static_model_dir(model_id)
    if (target / "modules.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "modules.json").is_file():
            return target
        try:
            import torch
            from model2vec.distill import distill_from_model
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.models import StaticEmbedding
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise UserError(
                f"mining.model_id={STATIC_PREFIX}{model_id} needs model2vec: "
                f"pip install 'model2vec[distill]' ({_first_line(err)})"
            ) from None
        from rerank_sweeps.models import hub_unavailable, resolve_model

        source = resolve_model(model_id)
        started = time.perf_counter()
        try:
            teacher = AutoModel.from_pretrained(source, dtype=torch.bfloat16)
            tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
        except OSError as err:
            raise hub_unavailable(model_id, err) from None
        static = distill_from_model(
            model=teacher,
            tokenizer=tokenizer,
            pca_dims=STATIC_PCA_DIMS,
            quantize_to="float32",
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
        weights = torch.from_numpy(static.embedding).contiguous()
        module = StaticEmbedding(static.tokenizer, embedding_weights=weights, base_model=model_id)
        tmp = target.parent / f".tmp-static-{uuid.uuid4().hex[:8]}"
        try:
            SentenceTransformer(modules=[module], device="cpu").save(str(tmp))
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("distilled %s into %s in %.1fs", model_id, target, time.perf_counter() - started)
    return target


def load_miner(mining: MiningConfig) -> tuple[Any, bool]:
    """The SentenceTransformer that mines negatives, and whether its weights are bfloat16.

    `static:<id>` distils a static embedding from `<id>` first (once). A transformer miner is
    loaded in bfloat16 where that is fast (`mining.bf16`); `encode` still returns float32, so
    similarities, ranks and margins are computed in full precision.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    from rerank_sweeps.models import hub_unavailable, resolve_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    static = mining.model_id.startswith(STATIC_PREFIX)
    if static:
        path = str(distill_static(mining.model_id[len(STATIC_PREFIX) :]))
    else:
        path = resolve_model(mining.model_id)
    bf16 = not static and _bf16_wanted(mining.bf16, device)
    kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if bf16 else {}
    try:
        model = SentenceTransformer(path, device=device, **kwargs)
    except OSError as err:
        raise hub_unavailable(mining.model_id, err) from None
    if not static:  # a static embedding has no sequence limit (and no setter for one)
        model.max_seq_length = mining.max_seq_length
    return model, bf16


def _bf16_wanted(setting: str, device: str) -> bool:
    import torch

    setting = str(setting).lower()
    if setting != "auto":
        return setting == "true"
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    # bf16 matmuls are fast only on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere they
    # are emulated and slower than float32.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


# Question x corpus similarities scored in one call of the library (floats): ~0.8 GB.
_SIMILARITY_BUDGET = 200_000_000


def _question_chunks(rows: Sequence[QAPair], size: int) -> Iterator[list[QAPair]]:
    """Rows in chunks of about `size`, all rows of one question in the same chunk."""
    by_question: dict[str, list[QAPair]] = defaultdict(list)
    for row in rows:
        by_question[row.question].append(row)
    chunk: list[QAPair] = []
    for group in by_question.values():
        if chunk and len(chunk) + len(group) > size:
            yield chunk
            chunk = []
        chunk.extend(group)
    if chunk:
        yield chunk


@dataclass
class MinedRows:
    """Mined tuples and what mining saw (the miner's own similarities, for stats and tests)."""

    tuples: list[NTuple]
    positive_scores: list[float]
    negative_scores: list[list[float]]
    stats: dict[str, Any]


def mine_negatives(
    rows: Sequence[QAPair],
    corpus_rows: Sequence[QAPair],
    model: Any,
    mining: MiningConfig,
    num_negatives: int,
    seed: int,
    min_negatives: int | None = None,
    cache_folder: Path | None = None,
) -> MinedRows:
    """Up to `num_negatives` hard negatives per row, drawn from the answers of `corpus_rows`.

    Rows that end with fewer than `min_negatives` (default: `num_negatives`) are dropped, so
    by default every row has exactly `num_negatives`.

    `mine_hard_negatives` already skips each question's exact positives; a candidate that is
    only a variant of a positive (same relevance set after normalisation) or an answer of the
    same question in another set would still slip through, so we mine a few spare candidates
    and filter by answer_key afterwards. Rows left with too few negatives are dropped.

    The library scores every question against the whole corpus at once, so large inputs are
    mined in chunks of questions; with `cache_folder` the corpus is embedded once (the
    library's own embedding cache) and a killed build resumes from the saved embeddings.
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    min_negatives = num_negatives if min_negatives is None else min_negatives
    stats: dict[str, Any] = {"rows": len(rows)}
    if not rows:
        return MinedRows([], [], [], stats | {"kept": 0})
    corpus = list(dict.fromkeys(r.answer for r in corpus_rows))
    corpus_keys = Counter(answer_key(text) for text in corpus)
    forbidden: dict[str, set[str]] = defaultdict(set)  # normalised question -> answer keys
    for row in list(rows) + list(corpus_rows):
        forbidden[normalize(row.question)].add(row.answer_key)
    # Candidates we may have to throw away: the variants of a question's own answers.
    spare = max(sum(corpus_keys[k] for k in forbidden[normalize(r.question)]) for r in rows)
    positives_per_question = max(Counter(r.question for r in rows).values())
    range_max = min(mining.range_max, len(corpus) - positives_per_question)
    window = range_max - mining.range_min
    if window < min_negatives:
        raise UserError(
            f"too few training answers ({len(corpus)}) to mine {num_negatives} negatives between "
            f"ranks mining.range_min={mining.range_min} and mining.range_max={mining.range_max}"
        )
    wanted = min(num_negatives + spare, window)
    margin: dict[str, float] = {}
    if mining.margin is None:
        pass  # no filter: the retriever's mistakes (negatives above the positive) are kept
    elif mining.margin_type == "relative":
        margin["relative_margin"] = mining.margin
    else:
        margin["absolute_margin"] = mining.margin
    mined: dict[str, list[Any]] = {"question": [], "answer": [], "scores": []}
    state = random.getstate()
    random.seed(seed)  # mine_hard_negatives samples with the global `random` (strategy random)
    try:
        for chunk in _question_chunks(rows, max(1, _SIMILARITY_BUDGET // len(corpus))):
            dataset = Dataset.from_dict(
                {"question": [r.question for r in chunk], "answer": [r.answer for r in chunk]}
            )
            part = mine_hard_negatives(
                dataset,
                model,
                anchor_column_name="question",
                positive_column_name="answer",
                corpus=corpus,
                range_min=mining.range_min,
                range_max=range_max,
                num_negatives=wanted,
                sampling_strategy=mining.sampling_strategy,
                output_format="labeled-list",
                output_scores=True,
                batch_size=mining.batch_size,
                verbose=False,
                cache_folder=str(cache_folder) if cache_folder is not None else None,
                **margin,
            )
            for column, values in mined.items():
                values.extend(part[column])
    finally:
        random.setstate(state)

    rng = random.Random(seed)
    key_of = {text: answer_key(text) for text in corpus}
    row_by_pair = {(r.question, r.answer): r for r in rows}
    result = MinedRows([], [], [], stats)
    dropped_same_set = 0
    too_few = 0
    for question, texts, scores in zip(
        mined["question"], mined["answer"], mined["scores"], strict=True
    ):
        positive, candidates = texts[0], texts[1:]
        row = row_by_pair[(question, positive)]
        banned = forbidden[normalize(question)]
        kept = [
            (t, s) for t, s in zip(candidates, scores[1:], strict=True) if key_of[t] not in banned
        ]
        dropped_same_set += len(candidates) - len(kept)
        if len(kept) < min_negatives:
            too_few += 1
            continue
        if mining.sampling_strategy == "random" and len(kept) > num_negatives:
            kept = sorted(rng.sample(kept, num_negatives), key=lambda ts: -ts[1])
        kept = kept[:num_negatives]
        if mining.random_share > 0:
            kept = _mix_random(kept, corpus, key_of, banned, mining.random_share, rng)
        result.tuples.append(NTuple(row.question, row.answer, [t for t, _ in kept]))
        result.positive_scores.append(float(scores[0]))
        result.negative_scores.append([float(s) for _, s in kept])
    missing = len(rows) - len(mined["question"])
    flat = [s for scores in result.negative_scores for s in scores]
    result.stats |= {
        "kept": len(result.tuples),
        "dropped_no_candidates": missing,
        "dropped_too_few_negatives": too_few,
        "candidates_removed_same_relevance_set": dropped_same_set,
        "corpus_answers": len(corpus),
        "range_max_used": range_max,
        "mean_positive_score": _mean(result.positive_scores),
        "mean_negative_score": _mean(flat),
    }
    if len(result.tuples) < len(rows):
        log.warning(
            "mining kept %d of %d rows (%d had too few negatives; relax mining.margin or raise "
            "mining.range_max)",
            len(result.tuples),
            len(rows),
            len(rows) - len(result.tuples),
        )
    return result


def _bm25_rankings(
    corpus: Sequence[str],
    vectors: Any,
    questions: Sequence[str],
    depth: int,
    work_dir: Path | None,
) -> dict[str, list[int]]:
    """Each question's BM25 top `depth` pool positions, from a LanceDB table of the pool (the
    FTS the evaluation uses), written in `work_dir` (or a temporary folder)."""
    import tempfile

    from rerank_sweeps.evaluate import fts_search
    from rerank_sweeps.index import write_table

    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        ids = [f"p{i:08d}" for i in range(len(corpus))]
        table = write_table(Path(folder) / "pool", ids, list(corpus), vectors)
        hits = fts_search(table, questions, depth)
    return {
        q: [int(doc[1:]) for doc in found["ids"]] for q, found in zip(questions, hits, strict=True)
    }


def _margin_keeps(mining: MiningConfig, positive: float, negative: float) -> bool:
    """Whether a candidate passes `mining.margin` (the library's relative/absolute rule)."""
    if mining.margin is None:
        return True
    if mining.margin_type == "relative":
        return negative <= positive * (1 - mining.margin)
    return negative + mining.margin <= positive


def mine_from_retriever(
    conf: RunConfig,
    rows: Sequence[QAPair],
    pool_rows: Sequence[QAPair],
    known: dict[str, Any],
    num_negatives: int,
    seed: int,
    min_negatives: int | None = None,
    work_dir: Path | None = None,
) -> MinedRows:
    """Negatives as the first stage retrieves them: the index embedder's nearest pool answers
    and, with `fts` in `mining.legs`, BM25's top answers (the legs take turns).

    The pool's vectors come from the evaluation's LanceDB table where it holds the text
    (`known`: the distractors), so only the training answers and questions are encoded. Each
    row's candidates are the top `mining.range_max` pool answers outside the question's
    relevance sets; the first `mining.range_min` are skipped (likely unlabelled positives),
    `mining.margin` filters as in `mine_hard_negatives`, and `mining.random_share` of the
    negatives are replaced by random pool answers.
    """
    import numpy as np

    from rerank_sweeps.index import embed_reusing

    mining = conf.mining
    min_negatives = num_negatives if min_negatives is None else min_negatives
    stats: dict[str, Any] = {"rows": len(rows)}
    if not rows:
        return MinedRows([], [], [], stats | {"kept": 0})
    corpus = list(dict.fromkeys(r.answer for r in pool_rows))
    key_of = {text: answer_key(text) for text in corpus}
    forbidden: dict[str, set[str]] = defaultdict(set)
    for row in list(rows) + list(pool_rows):
        if row.question:
            forbidden[normalize(row.question)].add(row.answer_key)
    questions = list(dict.fromkeys(r.question for r in rows))
    reused = sum(1 for t in corpus if t in known)
    pool_vectors = embed_reusing(conf, corpus, known, "embed mining pool")
    question_vectors = embed_reusing(conf, questions, known, "embed questions to mine")
    position = {text: i for i, text in enumerate(corpus)}
    question_index = {text: i for i, text in enumerate(questions)}
    nan = float("nan")
    depth = min(mining.range_max, len(corpus))
    ranked: dict[str, np.ndarray] = {}
    chunk = max(1, _SIMILARITY_BUDGET // max(1, len(corpus)))
    for start in range(0, len(questions), chunk):
        sims = question_vectors[start : start + chunk] @ pool_vectors.T
        top = np.argpartition(-sims, depth - 1, axis=1)[:, :depth]
        for i, row_top in enumerate(top):
            ranked[questions[start + i]] = row_top[np.argsort(-sims[i, row_top], kind="stable")]
    bm25: dict[str, list[int]] = {}
    if "fts" in mining.legs:
        bm25 = _bm25_rankings(corpus, pool_vectors, questions, depth, work_dir)
    rng = random.Random(seed)
    result = MinedRows([], [], [], stats)
    too_few = removed = 0
    for row in rows:
        banned = forbidden[normalize(row.question)]
        qv = question_vectors[question_index[row.question]]
        positive = float(pool_vectors[position[row.answer]] @ qv) if row.answer in position else nan
        legs = []
        if "vector" in mining.legs:
            legs.append(ranked[row.question].tolist())
        if "fts" in mining.legs:
            legs.append(bm25[row.question])
        per_leg = []
        for order in legs:
            candidates = []
            for idx in order:
                if key_of[corpus[idx]] in banned:
                    removed += 1
                    continue
                candidates.append((corpus[idx], float(pool_vectors[idx] @ qv)))
            candidates = candidates[mining.range_min :]
            if positive == positive:  # NaN when the positive is not in the pool (dev rows)
                candidates = [c for c in candidates if _margin_keeps(mining, positive, c[1])]
            per_leg.append(candidates)
        # The legs take turns (vector first), as the hybrid candidate set mixes them.
        candidates = []
        seen: set[str] = set()
        for rank in range(max((len(c) for c in per_leg), default=0)):
            for leg in per_leg:
                if rank < len(leg) and leg[rank][0] not in seen:
                    seen.add(leg[rank][0])
                    candidates.append(leg[rank])
        if mining.sampling_strategy == "random" and len(candidates) > num_negatives:
            candidates = sorted(rng.sample(candidates, num_negatives), key=lambda ts: -ts[1])
        kept = candidates[:num_negatives]
        if mining.random_share > 0:
            kept = _mix_random(kept, corpus, key_of, banned, mining.random_share, rng)
        if len(kept) < min_negatives:
            too_few += 1
            continue
        result.tuples.append(NTuple(row.question, row.answer, [t for t, _ in kept]))
        result.positive_scores.append(positive)
        result.negative_scores.append([s for _, s in kept])
    flat = [s for scores in result.negative_scores for s in scores]
    result.stats |= {
        "kept": len(result.tuples),
        "dropped_too_few_negatives": too_few,
        "candidates_removed_same_relevance_set": removed,
        "corpus_answers": len(corpus),
        "pool_vectors_reused": reused,
        "range_max_used": depth,
        "mean_positive_score": _mean(result.positive_scores),
        "mean_negative_score": _mean(flat),
        "legs": list(mining.legs),
        "negatives_above_positive": sum(
            n > p
            for p, ns in zip(result.positive_scores, result.negative_scores, strict=True)
            for n in ns
        ),
    }
    return result


def _mix_random(
    kept: list[tuple[str, float]],
    corpus: Sequence[str],
    key_of: dict[str, str],
    banned: set[str],
    share: float,
    rng: random.Random,
) -> list[tuple[str, float]]:
    """Each negative replaced, with probability `share`, by a random corpus answer outside the
    question's relevance sets (score NaN: the miner did not pick it). Mixing random negatives
    into hard ones keeps a reranker from learning only the retriever's confusions."""
    taken = {t for t, _ in kept}
    out = []
    for text, score in kept:
        if rng.random() < share:
            for _ in range(20):  # a few tries: the pool is large, clashes are rare
                pick = corpus[rng.randrange(len(corpus))]
                if pick not in taken and key_of[pick] not in banned:
                    taken.add(pick)
                    text, score = pick, float("nan")
                    break
        out.append((text, score))
    return out


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v == v]  # NaN: a random negative has no miner score
    return round(sum(values) / len(values), 4) if values else None


def miner_config(conf: RunConfig) -> MiningConfig:
    """The mining settings in force: with `mining.source=retriever` the miner is the index's
    embedder (the first stage whose candidates the reranker will see)."""
    if conf.mining.source == "retriever":
        return replace(conf.mining, model_id=conf.index.embedder)
    return conf.mining


def distractor_rows(split: Split) -> list[QAPair]:
    """The eval corpus's documents no eval query counts as relevant, as answer-only rows.

    Retriever mining draws negatives from them as well as from the training answers: they are
    the texts the reranker will meet among its candidates, and never an eval answer.
    """
    relevant = {doc for q in split.eval for doc in q.relevant}
    return [
        QAPair(f"x{d.id}", "", d.text, answer_key(d.text))
        for d in split.corpus
        if d.id not in relevant
    ]


def negatives_stage(
    conf: RunConfig, cache: Cache, split_art: Artifact, index_art: Artifact | None = None
) -> Artifact:
    """Mined train and dev n-tuples (key: conf.mining, conf.negatives, the split's key).

    Training rows get exactly `negatives` negatives: with `mining.source=model`, mined by
    `mining.model_id` from the training answers; with `mining.source=retriever`, retrieved by
    the index embedder from the training answers and the corpus's distractors (`index_art`
    lends the distractors' vectors). Dev rows get between `negatives` and
    max(mining.dev_negatives, negatives) from train+dev answers, for the mined-tuple dev
    evaluator; `mining.dev_negatives=0` mines none (the dev signal is then the candidates).
    """
    mining = miner_config(conf)
    config = {"mining": mining, "negatives": conf.negatives, "seed": conf.seed}

    def build(out_dir: Path, work_dir: Path) -> None:
        split = load_split(split_art)
        dev_count = max(mining.dev_negatives, conf.negatives) if mining.dev_negatives else 0
        started = time.perf_counter()
        bf16 = False
        if mining.source == "retriever":
            from rerank_sweeps.index import known_vectors

            known = known_vectors(index_art)
            pool = split.train + distractor_rows(split)
            retriever_conf = replace(conf, mining=mining)

            def mine(rows: list[QAPair], pool_rows: list[QAPair], n: int, low: int) -> MinedRows:
                return mine_from_retriever(
                    retriever_conf, rows, pool_rows, known, n, conf.seed, low, work_dir
                )
        else:
            model, bf16 = load_miner(mining)
            embeddings = work_dir / "embeddings"  # survives a killed build: resume
            pool = split.train

            def mine(rows: list[QAPair], pool_rows: list[QAPair], n: int, low: int) -> MinedRows:
                return mine_negatives(
                    rows, pool_rows, model, mining, n, conf.seed, low, cache_folder=embeddings
                )

        train = mine(split.train, pool, conf.negatives, conf.negatives)
        train_seconds = time.perf_counter() - started
        if dev_count:
            dev = mine(split.dev, split.train + split.dev, dev_count, conf.negatives)
        else:
            dev = MinedRows([], [], [], {"rows": len(split.dev), "kept": 0})
        if not train.tuples:
            raise UserError(
                "hard-negative mining kept no training rows: relax mining.margin, lower "
                "mining.range_min or raise mining.range_max"
            )
        _write_jsonl(out_dir / "train.jsonl", (asdict(t) for t in train.tuples))
        _write_jsonl(out_dir / "dev.jsonl", (asdict(t) for t in dev.tuples))
        stats = {
            "model_id": mining.model_id,
            "source": mining.source,
            "pool": {
                "train_answers": len(split.train),
                "distractors": len(pool) - len(split.train),
            },
            "bf16": bf16,
            "train": train.stats | {"seconds": round(train_seconds, 3)},
            "dev": dev.stats | {"negatives": dev_count},
            "seconds": round(time.perf_counter() - started, 3),
        }
        (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
        log.info(
            "negatives: %d train tuples, %d dev tuples with %s in %.1fs",
            len(train.tuples),
            len(dev.tuples),
            mining.model_id,
            stats["seconds"],
        )

    inputs = [split_art] + ([index_art] if mining.source == "retriever" and index_art else [])
    return cache.stage("negatives", NEGATIVES_VERSION, config, inputs, build)


def load_negatives(path_or_artifact: Path | str | Artifact) -> Negatives:
    """Read a negatives artifact written by `negatives_stage`."""
    root = _artifact_path(path_or_artifact)
    return Negatives(
        train=[NTuple(**r) for r in _read_jsonl(root / "train.jsonl")],
        dev=[NTuple(**r) for r in _read_jsonl(root / "dev.jsonl")],
    )
