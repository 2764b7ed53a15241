"""Sources, the leakage-free split, and hard-negative mining (offline, small data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, compose_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rerank_sweeps import data
from rerank_sweeps.cache import Cache
from rerank_sweeps.config import ConfigError, DataConfig, MiningConfig, UserError, validate
from rerank_sweeps.data import QAPair, SourceRows, normalize

# ---------------------------------------------------------------------------------------------
# Normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The  Cat\tsat. ", "the cat sat"),
        ('"Hello, world!"', "hello, world"),
        ("¿Qué tal?", "qué tal"),
        ("e.g. U.S.A.", "e.g. u.s.a"),
        ("...", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_answers_equal_after_normalisation_share_a_key() -> None:
    assert data.answer_key("The cat sat.") == data.answer_key("the  cat sat")
    assert data.answer_key("The cat sat.") != data.answer_key("The cat sits.")


# ---------------------------------------------------------------------------------------------
# The split

_QUESTIONS = [f"question {i}" for i in range(30)]
_ANSWERS = [f"answer {i}" for i in range(30)]
_VARIANTS = [lambda s: s, str.upper, lambda s: s + ".", lambda s: f"  {s.title()}!"]

pair_strategy = st.tuples(
    st.sampled_from(_QUESTIONS), st.sampled_from(_VARIANTS),
    st.sampled_from(_ANSWERS), st.sampled_from(_VARIANTS),
).map(lambda t: (t[1](t[0]), t[3](t[2])))  # fmt: skip


def _config(num_train: int, num_dev: int, num_eval: int, corpus_size: int) -> DataConfig:
    return DataConfig(
        num_train=num_train, num_dev=num_dev, num_eval=num_eval, corpus_size=corpus_size
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=st.lists(pair_strategy, min_size=3, max_size=40),
    extras=st.lists(st.sampled_from(_ANSWERS).map(str.upper), max_size=5),
    sizes=st.tuples(st.integers(1, 10), st.integers(0, 5), st.integers(1, 5), st.integers(0, 20)),
    seed=st.integers(0, 2**16),
)
def test_split_is_disjoint_by_normalised_text_and_deterministic(
    pairs: list[tuple[str, str]],
    extras: list[str],
    sizes: tuple[int, int, int, int],
    seed: int,
) -> None:
    num_train, num_dev, num_eval, extra_corpus = sizes
    conf = _config(num_train, num_dev, num_eval, num_eval + extra_corpus)
    source = SourceRows(pairs=pairs, extra_answers=extras)
    try:
        split, stats = data.make_split(source, conf, seed)
    except UserError as err:
        # Too few groups (rows joined by answer or question) for both eval and training rows.
        event("one group only")
        assert "too small" in str(err)
        return

    eval_questions = {normalize(q.question) for q in split.eval}
    eval_answers = {normalize(d.text) for d in split.corpus}  # the corpus never holds train/dev
    for role in (split.train, split.dev):
        for row in role:
            assert normalize(row.question) not in eval_questions
            assert normalize(row.answer) not in eval_answers
            assert row.answer_key == data.answer_key(row.answer)
    # Dev answers never appear among training answers either (they mine from train+dev).
    assert not {r.answer_key for r in split.dev} & {r.answer_key for r in split.train}

    # Relevance by id set: exactly the corpus docs whose text is an answer of that question.
    by_id = {d.id: normalize(d.text) for d in split.corpus}
    for query in split.eval:
        answers = {normalize(a) for q, a in pairs if normalize(q) == normalize(query.question)}
        expected = sorted(i for i, text in by_id.items() if text in answers)
        assert query.relevant == expected
        assert expected  # every eval query has at least one relevant document

    assert 1 <= len(split.eval) <= num_eval
    assert len(split.dev) <= num_dev and 1 <= len(split.train) <= num_train
    assert len(split.corpus) <= max(conf.corpus_size, stats["eval_corpus_docs"])
    assert len({d.id for d in split.corpus}) == len(split.corpus)
    assert data.make_split(source, conf, seed)[0] == split


def test_split_honours_sizes_and_seed_when_the_source_is_large() -> None:
    pairs = [(f"q{i}", f"a{i}") for i in range(400)]
    conf = _config(num_train=100, num_dev=20, num_eval=30, corpus_size=200)
    split, stats = data.make_split(SourceRows(pairs=pairs), conf, seed=7)
    assert (len(split.train), len(split.dev), len(split.eval), len(split.corpus)) == (
        100,
        20,
        30,
        200,
    )
    assert stats["shrunk"] is False and stats["distractors"] == 170
    other, _ = data.make_split(SourceRows(pairs=pairs), conf, seed=8)
    assert {q.question for q in other.eval} != {q.question for q in split.eval}


def test_duplicate_answers_share_one_relevance_set_with_every_occurrence_relevant() -> None:
    # Two questions whose answers differ only in case and punctuation: one relevance set.
    pairs = [("Who wrote it?", "Ann Smith."), ("Who signed it?", "ann smith")]
    pairs += [(f"filler {i}?", f"filler answer {i}") for i in range(30)]
    conf = _config(num_train=10, num_dev=2, num_eval=10, corpus_size=20)
    for seed in range(20):
        split, _ = data.make_split(SourceRows(pairs=pairs), conf, seed)
        smith = sorted(d.id for d in split.corpus if normalize(d.text) == "ann smith")
        asked = [q for q in split.eval if "Ann" not in q.question and "it?" in q.question]
        for query in asked:
            assert query.relevant == smith and len(smith) == 2
        if asked:
            return
    pytest.fail("no seed put the Ann Smith questions into eval")


def test_a_source_too_small_shrinks_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    pairs = [(f"q{i}", f"a{i}") for i in range(10)]
    conf = _config(num_train=80, num_dev=10, num_eval=10, corpus_size=50)
    split, stats = data.make_split(SourceRows(pairs=pairs), conf, seed=1)
    # 10 rows for 100 wanted: one tenth of each size.
    assert (len(split.eval), len(split.dev), len(split.train)) == (1, 1, 8)
    assert stats["shrunk"] is True
    assert "split shrunk" in caplog.text


def test_a_source_with_no_usable_rows_is_a_user_error() -> None:
    source = SourceRows(pairs=[("...", "!!")], skipped=Counter({"empty field": 3}))
    with pytest.raises(UserError, match="no usable question/answer rows"):
        data.make_split(source, _config(1, 0, 1, 1), seed=0)


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
# Hard-negative mining

_TOPICS = [
    "cat", "dog", "horse", "river", "mountain", "bread", "music", "doctor", "king", "rain",
    "computer", "ship", "garden", "winter", "money", "school",
]  # fmt: skip


def _mining_rows() -> list[QAPair]:
    rows = []
    for i, topic in enumerate(_TOPICS):
        answers = [f"A {topic} is a thing people often talk about.", f"Facts about the {topic}."]
        for j, answer in enumerate(answers):
            question = f"Tell me about the {topic}, part {j}"
            rows.append(QAPair(f"t{i}{j}", question, answer, data.answer_key(answer)))
    # The same relevance set as row 0 in another spelling, asked by another question: a very
    # similar candidate that must never be mined as a negative for row 0 (or vice versa).
    variant = "a CAT is a thing people often talk about"
    rows.append(QAPair("tv", "What do people say about cats?", variant, data.answer_key(variant)))
    return rows


@pytest.fixture(scope="module")
def minilm():
    """The offline all-MiniLM-L6-v2 as a miner (never the model under training in tests)."""
    model, bf16 = data.load_miner(
        MiningConfig(model_id="sentence-transformers/all-MiniLM-L6-v2", bf16="false")
    )
    assert bf16 is False
    return model


@pytest.mark.parametrize(
    ("margin_type", "margin", "strategy"),
    [("relative", 0.0, "top"), ("absolute", 0.05, "top"), ("relative", 0.1, "random")],
)
def test_mined_negatives_respect_relevance_sets_counts_and_margins(
    minilm, margin_type: str, margin: float, strategy: str
) -> None:
    rows = _mining_rows()
    mining = MiningConfig(
        range_max=20, margin=margin, margin_type=margin_type, sampling_strategy=strategy
    )
    mined = data.mine_negatives(rows, rows, minilm, mining, num_negatives=3, seed=0)
    assert len(mined.tuples) >= len(rows) // 2
    keys_of_question: dict[str, set[str]] = {}
    for row in rows:
        keys_of_question.setdefault(normalize(row.question), set()).add(row.answer_key)
    for tup, pos_score, neg_scores in zip(
        mined.tuples, mined.positive_scores, mined.negative_scores, strict=True
    ):
        assert len(tup.negatives) == 3 == len(set(tup.negatives))
        for negative in tup.negatives:
            assert negative != tup.positive
            assert data.answer_key(negative) not in keys_of_question[normalize(tup.question)]
        for score in neg_scores:
            if margin_type == "relative":
                assert score <= pos_score * (1 - margin) + 1e-6
            else:
                assert score + margin <= pos_score + 1e-6
        assert neg_scores == sorted(neg_scores, reverse=True)
    # The scores are the miner's own cosine similarities.
    tup = mined.tuples[0]
    emb = minilm.encode([tup.question, tup.positive, tup.negatives[0]], normalize_embeddings=True)
    assert mined.positive_scores[0] == pytest.approx(float(emb[0] @ emb[1]), abs=1e-4)
    assert mined.negative_scores[0][0] == pytest.approx(float(emb[0] @ emb[2]), abs=1e-4)
    if strategy == "top" and margin_type == "relative":
        # The variant of row 0's answer was a top candidate and was filtered out.
        assert mined.stats["candidates_removed_same_relevance_set"] >= 1


def test_top_strategy_takes_the_most_similar_allowed_answers(minilm) -> None:
    rows = _mining_rows()
    mining = MiningConfig(range_max=30, margin=0.0, margin_type="absolute")
    mined = data.mine_negatives(rows, rows, minilm, mining, num_negatives=2, seed=0)
    answers = list(dict.fromkeys(r.answer for r in rows))
    for tup, pos_score in zip(mined.tuples[:6], mined.positive_scores, strict=False):
        emb = minilm.encode([tup.question, *answers], normalize_embeddings=True)
        sims = emb[1:] @ emb[0]
        banned = {r.answer_key for r in rows if normalize(r.question) == normalize(tup.question)}
        allowed = [
            (s, a) for s, a in zip(sims, answers, strict=True)
            if data.answer_key(a) not in banned and s <= pos_score + 1e-6
        ]  # fmt: skip
        best = [a for _, a in sorted(allowed, key=lambda sa: -sa[0])[:2]]
        assert tup.negatives == best


def test_chunked_mining_embeds_the_corpus_once_and_matches_one_call(
    minilm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rows = _mining_rows()
    mining = MiningConfig(range_max=20)
    whole = data.mine_negatives(rows, rows, minilm, mining, num_negatives=2, seed=0)
    monkeypatch.setattr(data, "_SIMILARITY_BUDGET", 5 * len(rows))  # chunks of 5 questions
    chunked = data.mine_negatives(
        rows, rows, minilm, mining, num_negatives=2, seed=0, cache_folder=tmp_path
    )
    assert sorted(chunked.tuples, key=str) == sorted(whole.tuples, key=str)
    assert len(list(tmp_path.glob("corpus_embeddings_*.npy"))) == 1
    assert len(list(tmp_path.glob("query_embeddings_*.npy"))) == 7  # ceil(33 / 5)


def test_too_few_answers_for_the_rank_window_is_a_user_error(minilm) -> None:
    rows = _mining_rows()[:4]
    mining = MiningConfig(range_min=3, range_max=10)
    with pytest.raises(UserError, match="too few training answers"):
        data.mine_negatives(rows, rows, minilm, mining, num_negatives=2, seed=0)


@pytest.mark.skipif(
    not (data.WORDNET_DEFAULT / "data.noun").is_file(), reason="needs wordnet-base (make setup)"
)
@pytest.mark.parametrize("source", ["model", "retriever"])
def test_negatives_stage_writes_train_and_dev_tuples(tmp_path: Path, source: str) -> None:
    cfg = compose_config(
        [
            "experiment=tiny",
            f"paths.root={tmp_path}",
            "negatives=2",
            "mining.dev_negatives=4",
            f"mining.source={source}",
        ]
    )
    conf = validate(cfg)
    cache = Cache(conf.paths.cache)
    split_art = data.split_stage(conf, cache)
    index_art = None
    if source == "retriever":
        from rerank_sweeps.index import index_stage

        index_art = index_stage(conf, cache, split_art)
    art = data.negatives_stage(conf, cache, split_art, index_art)
    split, negs = data.load_split(split_art), data.load_negatives(art)
    train_answers = {normalize(r.answer) for r in split.train}
    # The retriever also draws from the corpus's distractors (never from its eval answers).
    eval_ids = {d for q in split.eval for d in q.relevant}
    eval_texts = {normalize(d.text) for d in split.corpus if d.id in eval_ids}
    distractors = {normalize(d.text) for d in split.corpus if d.id not in eval_ids}
    pool = train_answers | (distractors if source == "retriever" else set())
    dev_and_train = train_answers | {normalize(r.answer) for r in split.dev}
    assert negs.train and all(len(t.negatives) == 2 for t in negs.train)
    assert all({normalize(n) for n in t.negatives} <= pool for t in negs.train)
    if source == "retriever":
        assert any({normalize(n) for n in t.negatives} & distractors for t in negs.train)
    assert negs.dev and all(2 <= len(t.negatives) <= 4 for t in negs.dev)
    assert all({normalize(n) for n in t.negatives} <= dev_and_train for t in negs.dev)
    for tup in negs.train + negs.dev:  # eval answers never reach training, in any role
        assert not {normalize(n) for n in tup.negatives} & eval_texts
    stats = json.loads((art.path / "stats.json").read_text())
    assert stats["train"]["kept"] == len(negs.train) and stats["source"] == source
    # The negatives key holds mining settings, not evaluation ones.
    again = data.negatives_stage(
        replace(conf, top_k=[3], objective=[]), cache, split_art, index_art
    )
    assert again.hit and again.key == art.key


def test_static_miner_is_distilled_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("model2vec")
    monkeypatch.setenv("RERANK_SWEEPS_MODELS", str(tmp_path / "models"))
    mining = MiningConfig(model_id="static:tiny-random/bert")
    model, bf16 = data.load_miner(mining)
    target = data.static_model_dir("tiny-random/bert")
    assert (target / "modules.json").is_file() and bf16 is False
    stamp = (target / "modules.json").stat().st_mtime_ns
    again, _ = data.load_miner(mining)
    assert (target / "modules.json").stat().st_mtime_ns == stamp
    first = model.encode(["a cat and a dog"])
    assert np.allclose(first, again.encode(["a cat and a dog"]))
    assert type(model[0]).__name__ == "StaticEmbedding"


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
    from rerank_sweeps.pydocs import read_pydocs

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
    # max_rows: a seeded sample of rows, in file order, the same for the same seed.
    sample = read_pydocs(pydoc_dir, 4, seed=5)
    assert sample.rows_read == 4
    assert sample == read_pydocs(pydoc_dir, 4, seed=5)
    assert set(sample.pairs) <= set(rows.pairs)
    assert sample.pairs == [p for p in rows.pairs if p in sample.pairs]


def test_pydoc_answers_are_cut_at_a_word_boundary() -> None:
    from rerank_sweeps.pydocs import MAX_ANSWER_CHARS, docstring_pair

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
# Mining from the retriever (mining.source=retriever)


def _retriever_conf(**mining):
    mining.setdefault("legs", ["vector"])
    conf = validate(compose_config(["experiment=tiny", "mining.source=retriever"]))
    return replace(conf, mining=replace(conf.mining, **mining))


def _unit(x: float, y: float) -> np.ndarray:
    v = np.array([x, y], dtype=np.float32)
    return v / np.linalg.norm(v)


# q1's similarities: a2 1.0 (above its positive a1 at 0.6), distractor d1 0.9, a3 0.8, a4 0.0.
_POOL_VECTORS = {
    "q1": _unit(1, 0),
    "a1": _unit(0.6, 0.8),
    "a2": _unit(1, 0),
    "a3": _unit(0.8, 0.6),
    "a4": _unit(0, 1),
    "d1": _unit(0.9, np.sqrt(1 - 0.81)),
}
_RETRIEVER_ROWS = [QAPair("t0", "q1", "a1", data.answer_key("a1"))] + [
    QAPair(f"t{i}", f"other {i}", f"a{i}", data.answer_key(f"a{i}")) for i in (2, 3, 4)
]
_DISTRACTOR = [QAPair("xd1", "", "d1", data.answer_key("d1"))]


@pytest.mark.parametrize(
    ("settings", "negatives", "minimum", "expected"),
    [
        ({"margin": None}, 2, 2, ["a2", "d1"]),  # the retriever's mistakes first
        ({"margin": None, "range_min": 1}, 2, 2, ["d1", "a3"]),  # the top one skipped
        ({"margin": 0.0}, 1, 1, ["a4"]),  # margin 0: only negatives below the positive
        ({"margin": 0.0}, 2, 2, None),  # too few below the positive: row dropped
    ],
)
def test_retriever_mining_by_hand(settings, negatives, minimum, expected) -> None:
    conf = _retriever_conf(**settings)
    mined = data.mine_from_retriever(
        conf,
        _RETRIEVER_ROWS[:1],
        _RETRIEVER_ROWS + _DISTRACTOR,
        _POOL_VECTORS,
        negatives,
        seed=13,
        min_negatives=minimum,
    )
    if expected is None:
        assert mined.tuples == [] and mined.stats["dropped_too_few_negatives"] == 1
        return
    assert [t.negatives for t in mined.tuples] == [expected]
    assert mined.positive_scores == pytest.approx([0.6])
    assert mined.stats["candidates_removed_same_relevance_set"] == 1  # a1, the positive
    above = sum(1 for n in expected if n in ("a2", "d1", "a3"))
    assert mined.stats["negatives_above_positive"] == above


def test_retriever_mining_mixes_random_negatives_from_the_pool() -> None:
    conf = _retriever_conf(margin=None, random_share=1.0)
    mined = data.mine_from_retriever(
        conf, _RETRIEVER_ROWS[:1], _RETRIEVER_ROWS + _DISTRACTOR, _POOL_VECTORS, 2, seed=13
    )
    (row,) = mined.tuples
    assert len(set(row.negatives)) == 2 and "a1" not in row.negatives
    assert all(np.isnan(s) for s in mined.negative_scores[0])  # the miner did not pick them


def test_retriever_mining_never_draws_an_eval_answer(tmp_path) -> None:
    """The pool is the training answers plus the distractors: no eval answer, no dev answer."""
    cfg = compose_config(["experiment=tiny", "mining.source=retriever", f"paths.root={tmp_path}"])
    conf = validate(cfg)
    cache = Cache(conf.paths.cache)
    split_art = data.split_stage(conf, cache)
    split = data.load_split(split_art)
    pool = data.distractor_rows(split)
    eval_ids = {d for q in split.eval for d in q.relevant}
    eval_texts = {d.text for d in split.corpus if d.id in eval_ids}
    assert pool and not eval_texts & {r.answer for r in pool}
    assert len(pool) == len(split.corpus) - len(eval_ids)


def test_retriever_mining_takes_turns_between_the_vector_and_bm25_legs(tmp_path) -> None:
    """BM25 ranks the gloss sharing the question's words first (a4: "river bank"); the vector
    leg's first pick is a2. With both legs the negatives alternate: a2 (vector), a4 (BM25)."""
    texts = {"a1": "land beside water", "a2": "money", "a3": "a place", "a4": "river bank"}
    vectors = {texts[k]: v for k, v in _POOL_VECTORS.items() if k in texts}
    vectors["what is a river bank"] = _POOL_VECTORS["q1"]
    rows = [QAPair("t0", "what is a river bank", texts["a1"], data.answer_key(texts["a1"]))]
    pool = rows + [
        QAPair(f"t{k}", f"other {k}", t, data.answer_key(t)) for k, t in texts.items() if k != "a1"
    ]
    both = data.mine_from_retriever(
        _retriever_conf(margin=None, legs=["vector", "fts"]),
        rows,
        pool,
        vectors,
        2,
        13,
        2,
        tmp_path,
    )
    assert both.tuples[0].negatives == ["money", "river bank"]
    vector_only = data.mine_from_retriever(
        _retriever_conf(margin=None), rows, pool, vectors, 2, 13, 2, tmp_path
    )
    assert vector_only.tuples[0].negatives == ["money", "a place"]


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
