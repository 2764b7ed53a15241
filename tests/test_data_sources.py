"""The data sources: WordNet, local files, the hub and pydoc (offline, small data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO, compose_config

from rerank_sweeps import data
from rerank_sweeps.cache import Cache
from rerank_sweeps.config import ConfigError, UserError
from rerank_sweeps.data import normalize
from rerank_sweeps.validation import validate

# ---------------------------------------------------------------------------------------------
# WordNet

_LICENCE = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
_NOUNS = [
    "00000011 13 n 02 hot_dog 0 frank 1 000 | a smooth-textured sausage; "
    '"he ate two hot dogs at the game"; "franks on a bun"  ',
    "00000022 03 n 01 entity 0 000 | that which is perceived to exist  ",
    '00000033 06 n 01 widget 0 000 | a small gadget; "a small device that does things"  ',
]
_VERBS = [
    "00000044 38 v 01 run 0 001 @ 00000055 v 0000 01 + 02 00 | move fast by using one's feet; "
    '"She ran to the store"  ',
]
_ADJS = ['00000066 00 a 01 good(a) 0 000 | having desirable qualities; "a good report card"  ']


@pytest.fixture
def wordnet_dir(tmp_path: Path) -> Path:
    """A WordNet folder in the data.* format with five hand-written synsets."""
    folder = tmp_path / "wordnet"
    folder.mkdir()
    for pos, lines in (("noun", _NOUNS), ("verb", _VERBS), ("adj", _ADJS), ("adv", [])):
        (folder / f"data.{pos}").write_text(_LICENCE + "".join(f"{line}\n" for line in lines))
    (folder / "verb.exc").write_text("ran run\n")
    return folder


def test_wordnet_lines_become_hand_checked_questions(wordnet_dir: Path) -> None:
    rows = data.read_wordnet(data.wordnet_folder(str(wordnet_dir)))
    assert rows.pairs == [
        (
            'what does "hot dog" mean in "he ate two hot dogs at the game"?',
            "a smooth-textured sausage",
        ),
        ('what does "run" mean in "She ran to the store"?', "move fast by using one's feet"),
        ('what does "good" mean in "a good report card"?', "having desirable qualities"),
    ]
    # No example: a distractor. An example that names no lemma: a distractor, counted.
    assert rows.extra_answers == ["that which is perceived to exist", "a small gadget"]
    assert rows.skipped == Counter({"no lemma in any example (kept as distractor)": 1})
    assert rows.rows_read == 5


def test_wordnet_line_parsing() -> None:
    synset = data.parse_wordnet_line(_NOUNS[0])
    assert synset is not None
    assert synset.lemmas == ["hot dog", "frank"]
    assert synset.definition == "a smooth-textured sausage"
    assert synset.examples == ["he ate two hot dogs at the game", "franks on a bun"]
    assert data.parse_wordnet_line(_LICENCE) is None


@pytest.mark.parametrize(
    ("lemma", "example", "found"),
    [
        ("breathe", "I was breathing hard", True),
        ("carry", "she carried the box", True),
        ("take a breath", "He took a breath", False),  # irregular without an exception list
        ("take a breath", "taking a breath", True),
        ("cat", "a catalogue of errors", False),  # more than a simple inflection
        ("U.S.", "the U.S. economy", True),
    ],
)
def test_lemma_matching_allows_simple_inflections(lemma: str, example: str, found: bool) -> None:
    assert data.lemma_in_example(lemma, example) is found


def test_missing_wordnet_names_the_package_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        data.wordnet_folder(str(tmp_path))
    message = str(err.value)
    assert "apt-get install wordnet-base" in message and "data.path" in message
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------
# Local files

_ROWS = [
    {"query": "What is a cat?", "response": "A small animal."},
    {"query": "", "response": "no question"},
    {"query": "What is five?", "response": 5},
    {"query": "Where is the answer?"},
    {"query": "What is a dog?", "response": "A loyal animal."},
]
_GOOD = [("What is a cat?", "A small animal."), ("What is a dog?", "A loyal animal.")]


def test_jsonl_rows_with_bad_fields_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    lines = [json.dumps(r) for r in _ROWS] + ["{not json", "[1, 2]"]
    path.write_text("\n".join(lines) + "\n")
    rows = data.read_local(path, None, "query", "response")
    assert rows.pairs == _GOOD
    assert rows.skipped == Counter(
        {
            "empty field": 2,
            "non-text field": 1,
            "invalid JSON line": 1,
            "line is not a JSON object": 1,
        }
    )
    assert rows.rows_read == 7


def test_parquet_rows_with_bad_fields_are_skipped_and_counted(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "qa.parquet"
    table = pa.table(
        {
            "query": [r["query"] for r in _ROWS],
            "response": [r.get("response") if isinstance(r.get("response"), str) else None for r in _ROWS],
            "extra": list(range(len(_ROWS))),
        }
    )  # fmt: skip
    pq.write_table(table, path)
    rows = data.read_local(path, None, "query", "response")
    assert rows.pairs == _GOOD
    assert rows.skipped == Counter({"empty field": 3})
    assert data.read_local(path, None, "query", "response", max_rows=1).pairs == _GOOD[:1]


def test_csv_rows_with_empty_fields_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "qa.txt"  # an unknown suffix: the format comes from data.format
    path.write_text(
        "query,response\n"
        '"What is a cat?","A small animal."\n'
        ',no question\n'
        '"What is five?",\n'
        '"What is a dog?","A loyal animal."\n'
    )  # fmt: skip
    rows = data.read_local(path, "csv", "query", "response")
    assert rows.pairs == _GOOD
    assert rows.skipped == Counter({"empty field": 2})
    with pytest.raises(UserError, match="set data.format"):
        data.read_local(path, None, "query", "response")


def test_a_missing_column_lists_the_files_columns(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("q,a\nx,y\n")
    with pytest.raises(UserError, match=r"column 'question' .* its columns are: q, a"):
        data.read_local(path, None, "question", "a")


def test_hub_reading_slices_checks_columns_and_skips_rows(tmp_path: Path) -> None:
    # A local folder is a valid `load_dataset` path: the hub code path without the network.
    folder = tmp_path / "hub_copy"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _ROWS))
    rows = data.read_hub(str(folder), "train", "query", "response")
    assert rows.pairs == _GOOD
    assert rows.skipped == Counter({"empty field": 2, "non-text field": 1})
    assert data.read_hub(str(folder), "train", "query", "response", max_rows=2).rows_read == 2
    with pytest.raises(UserError, match=r"column 'answer' .* its columns are: query, response"):
        data.read_hub(str(folder), "train", "query", "answer")


def test_an_unreachable_hub_fails_at_once_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(UserError) as offline:
        data.read_hub("sentence-transformers/no-such-data-set", "train", "question", "answer")
    assert "offline mode and not in the local cache" in str(offline.value)
    # Online mode, but nothing listens where the hub should be: no retries, one line.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UserError) as online:
        data.read_hub("sentence-transformers/gooaq", "train", "question", "answer")
    assert "not reachable (127.0.0.1:9 unreachable" in str(online.value)
    for err in (offline.value, online.value):
        assert "\n" not in str(err) and "data=local" in str(err)
    assert time.perf_counter() - started < 10


def _run_cli(path: Path, root: Path) -> subprocess.Popen[str]:
    args = ["experiment=tiny", "data=local", f"data.path={path}", f"paths.root={root}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen(
        [sys.executable, "-m", "rerank_sweeps", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_bad_local_files_end_the_command_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"q": "a?", "a": "b"}\n')
    cases = {
        tmp_path / "missing.jsonl": "does not exist",
        empty: "is empty",
        wrong: "column 'question' (data.question_column) is not in wrong.jsonl; its columns are: q, a",
    }
    # Started together: each is a fresh interpreter, and the three overlap their imports.
    procs = {path: _run_cli(path, tmp_path / "out") for path in cases}
    for path, expected in cases.items():
        stdout, stderr = procs[path].communicate(timeout=240)
        assert procs[path].returncode == 2
        assert "Traceback" not in stdout + stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0], stderr


def test_a_changed_local_file_misses_the_split_cache(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}"}) + "\n" for i in range(30))
    )
    cfg = compose_config(["experiment=tiny", "data=local", f"data.path={path}", f"paths.root={tmp_path}"])  # fmt: skip
    conf = validate(cfg)
    cache = Cache(conf.paths.cache)
    first = data.split_stage(conf, cache)
    assert data.split_stage(conf, cache).key == first.key and cache.hits == {"split"}
    stats = json.loads((first.path / "stats.json").read_text())
    assert stats["rows_read"] == 30 and stats["shrunk"] is True
    with path.open("a") as handle:
        handle.write(json.dumps({"question": "", "answer": "skipped"}) + "\n")
    changed = data.split_stage(conf, cache)
    assert changed.key != first.key and not changed.hit
    assert json.loads((changed.path / "stats.json").read_text())["skipped"] == {"empty field": 1}
    # Settings that the split does not read never change its key.
    other = replace(conf, top_k=[1], objective=[], data=replace(conf.data, hub_id="someone/else"))
    assert data.split_stage(other, cache).key == changed.key
    loaded = data.load_split(changed)
    assert len(loaded.eval) >= 1 and loaded.train[0].answer_key == data.answer_key(
        loaded.train[0].answer
    )


# ---------------------------------------------------------------------------------------------
# Python standard-library docstrings (data=pydoc)

_SHEEP = '''"""Tools for counting sheep at night.

The counter keeps a running total and can be reset at any time, which
is useful when the count is lost.
"""


class Flock:
    """A group of sheep in one field.

    Each sheep is counted once, even if it jumps the fence twice.
    """

    def size(self):
        """Size.

        The number of sheep in the flock, counted from zero upwards.
        """


def count(flock, start=0):
    """Count the sheep in a flock.

    Returns   the number of sheep,
    starting from ``start``.

    >>> count([1, 2])
    2
    """


def bare():
    """Return nothing at all, ever."""


def _shuffle(flock):
    """Shuffle the sheep in a random order.

    Private helpers are never asked about, but this body is long enough to keep.
    """
'''


@pytest.fixture
def pydoc_dir(tmp_path: Path) -> Path:
    """Three .py files: one that does not parse, one in tests/ (never read), one to read."""
    folder = tmp_path / "python3.99"
    (folder / "tests").mkdir(parents=True)
    (folder / "broken.py").write_text('def oops(:\n    """Never read.\n\n    At all."""\n')
    (folder / "tests" / "test_sheep.py").write_text(
        '"""Tests for the sheep counter module.\n\n'
        'Each test counts a flock of sheep twice over."""\n'
    )
    (folder / "sheep.py").write_text(_SHEEP)
    return folder


def test_pydoc_docstrings_become_hand_checked_pairs(pydoc_dir: Path) -> None:
    from rerank_sweeps.data.pydoc import read_pydocs

    rows = read_pydocs(pydoc_dir, None, seed=0)
    assert rows.pairs == [
        (
            "Tools for counting sheep at night.",
            "The counter keeps a running total and can be reset at any time, which is useful "
            "when the count is lost.",
        ),
        (
            "A group of sheep in one field.",
            "Each sheep is counted once, even if it jumps the fence twice.",
        ),
        (
            "Count the sheep in a flock.",
            "Returns the number of sheep, starting from ``start``. >>> count([1, 2]) 2",
        ),
    ]
    # A body under a too-short summary or a private name stays as a distractor answer.
    assert rows.extra_answers == [
        "The number of sheep in the flock, counted from zero upwards.",
        "Private helpers are never asked about, but this body is long enough to keep.",
    ]
    assert rows.skipped == Counter(
        {
            "file does not parse": 1,
            "summary under 4 words (body kept as distractor)": 1,
            "no body after the summary": 1,
            "private name (body kept as distractor)": 1,
        }
    )
    assert rows.rows_read == 7 == len(rows.pairs) + sum(rows.skipped.values())
    assert rows.train_pairs == []
    # data.train_private: the private helper's pair is also a training-only pair; its body
    # stays a distractor, so nothing else changes.
    with_private = read_pydocs(pydoc_dir, None, seed=0, train_private=True)
    assert with_private.train_pairs == [
        (
            "Shuffle the sheep in a random order.",
            "Private helpers are never asked about, but this body is long enough to keep.",
        )
    ]
    assert replace(with_private, train_pairs=[]) == rows
    # max_rows: a seeded sample of rows, in file order, the same for the same seed.
    sample = read_pydocs(pydoc_dir, 4, seed=5)
    assert sample.rows_read == 4
    assert sample == read_pydocs(pydoc_dir, 4, seed=5)
    assert set(sample.pairs) <= set(rows.pairs)
    assert sample.pairs == [p for p in rows.pairs if p in sample.pairs]


def test_pydoc_answers_are_cut_at_a_word_boundary() -> None:
    from rerank_sweeps.data.pydoc import MAX_ANSWER_CHARS, docstring_pair

    body = " ".join(f"word{i}" for i in range(400))  # 2689 characters
    question, answer, reason = docstring_pair(f"A summary of four words.\n\n{body}\n")
    assert (question, reason) == ("A summary of four words.", None)
    assert 990 < len(answer) <= MAX_ANSWER_CHARS
    assert body.startswith(answer) and body[len(answer)] == " "


def test_real_stdlib_docstrings_compose_and_split(tmp_path: Path) -> None:
    cfg = compose_config(
        ["data=pydoc", "data.num_train=50", "data.num_dev=10", "data.num_eval=20",
         "data.corpus_size=400", f"paths.root={tmp_path}", "logger=none"]
    )  # fmt: skip
    conf = validate(cfg)
    assert conf.data.source == "pydoc" and conf.data.path is None
    source = data.load_source(conf.data, conf.seed)
    assert len(source.pairs) > 1000 and source.skipped["private name"] > 0
    split, stats = data.make_split(source, conf.data, conf.seed)
    assert (len(split.train), len(split.dev), len(split.eval), len(split.corpus)) == (
        50, 10, 20, 400
    )  # fmt: skip
    assert stats["shrunk"] is False
    eval_questions = {normalize(q.question) for q in split.eval}
    assert not eval_questions & {normalize(r.question) for r in split.train + split.dev}
    corpus_ids = {d.id for d in split.corpus}
    assert all(q.relevant and set(q.relevant) <= corpus_ids for q in split.eval)
    fingerprint = data.source_fingerprint(conf.data)
    assert fingerprint["version"].startswith("python3") and fingerprint["py_files"] > 100


# ---------------------------------------------------------------------------------------------
# Text encodings of local files


def test_a_local_file_in_another_encoding_fails_in_one_line_naming_the_line(tmp_path) -> None:
    path = tmp_path / "qa.jsonl"
    good = json.dumps({"question": "what is a café", "answer": "a coffee house"}) + "\n"
    bad = '{"question": "caf\xe9 au lait?", "answer": "coffee with milk"}\n'.encode("latin-1")
    path.write_bytes(good.encode("utf-8") + bad)
    with pytest.raises(UserError) as err:
        data.read_local(path, None, "question", "answer")
    message = str(err.value)
    assert "\n" not in message
    assert "qa.jsonl: line 2 is not valid utf-8 (byte 0xe9 at column 18)" in message
    assert "data.encoding" in message
    # Said explicitly, the same file is read without replacement characters.
    path.write_bytes(bad * 2)
    rows = data.read_local(path, None, "question", "answer", encoding="latin-1")
    assert rows.pairs[0] == ("café au lait?", "coffee with milk")
    csv = tmp_path / "qa.csv"
    csv.write_bytes(b"question,answer\n" + "na\xefve?,simple\n".encode("latin-1"))
    with pytest.raises(UserError, match="qa.csv: line 2 is not valid utf-8"):
        data.read_local(csv, None, "question", "answer")
    with pytest.raises(ConfigError, match="data.encoding='klingon'"):
        validate(compose_config(["data=local", "data.path=x.jsonl", "data.encoding=klingon"]))
