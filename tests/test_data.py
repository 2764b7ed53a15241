"""Records, the leakage-free split and the source registry (offline, small data)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from conftest import REPO, compose_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rerank_sweeps import data
from rerank_sweeps.config import ConfigError, DataConfig, UserError
from rerank_sweeps.data import SourceRows, normalize
from rerank_sweeps.validation import validate

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


def test_training_only_pairs_fill_training_and_never_touch_eval_or_dev() -> None:
    pairs = [(f"q{i}", f"a{i}") for i in range(200)]
    # Each public pair gets a twin that asks its question and one that gives its answer, and
    # 50 pairs share nothing: only those, or twins of training rows, may be trained on.
    train_pairs = [(f"Q{i}!", f"private {i}") for i in range(200)]
    train_pairs += [(f"private q{i}", f"A{i}.") for i in range(200)]
    train_pairs += [(f"fresh q{i}", f"fresh a{i}") for i in range(50)]
    distractors = [f"distractor {i}" for i in range(100)]
    conf = _config(num_train=150, num_dev=20, num_eval=30, corpus_size=100)
    public, _ = data.make_split(SourceRows(pairs=pairs, extra_answers=distractors), conf, seed=3)
    assert len(public.train) == 150  # the 200 questions fill eval, dev and train exactly
    conf = replace(conf, num_train=210)
    source = SourceRows(pairs=pairs, extra_answers=distractors, train_pairs=train_pairs)
    split, stats = data.make_split(source, conf, seed=3)
    # The evaluation is the same split as without them, and the public questions train first.
    assert (split.eval, split.dev, split.corpus) == (public.eval, public.dev, public.corpus)
    assert split.train[:150] == public.train
    assert len(split.train) == 210 and stats["train_only_used"] == 60
    assert stats["train_only_pairs_read"] == 450 and stats["shrunk"] is False
    held_out_questions = {normalize(q.question) for q in split.eval + split.dev}
    held_out_keys = {d.answer_key for d in split.dev} | {
        data.answer_key(d.text) for q in split.eval for d in split.corpus if d.id in q.relevant
    }
    added = split.train[150:]
    assert not {normalize(p.question) for p in added} & held_out_questions
    assert not {p.answer_key for p in added} & held_out_keys
    # Twins of held-out rows were on offer (50 eval/dev questions, each with two twins): all
    # refused, while twins of training rows and fresh pairs were taken.
    assert any(p.question.startswith("fresh") for p in added)
    assert any(p.question.startswith("Q") or p.answer.startswith("A") for p in added)
    assert [p.qid for p in split.train] == [f"t{n:06d}" for n in range(210)]
    assert data.make_split(source, conf, seed=3)[0] == split


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
# The source registry


def test_every_source_config_names_a_registered_source() -> None:
    import yaml

    names = {
        yaml.safe_load(path.read_text())["source"]
        for path in (REPO / "rerank_sweeps" / "conf" / "data").glob("*.yaml")
    }
    assert names <= set(data.SOURCES) and set(data.SOURCE_NAMES) == set(data.SOURCES)


def test_an_unknown_source_is_the_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as from_config:
        validate(compose_config(["data.source=nope"]))
    with pytest.raises(ConfigError) as from_registry:
        data.data_source("nope")
    assert str(from_registry.value) == str(from_config.value)
    assert str(from_config.value) == (
        "data.source='nope' is not allowed: one of " + ", ".join(data.SOURCE_NAMES)
    )
    # A config built around validation still never falls through to another reader.
    with pytest.raises(ConfigError, match="data.source='nope'"):
        data.load_source(replace(DataConfig(), source="nope"), seed=0)


def test_source_checks_and_descriptions_come_from_the_registry() -> None:
    with pytest.raises(ConfigError) as from_config:
        validate(compose_config(["data=local"]))
    with pytest.raises(ConfigError) as from_registry:
        data.check_source(replace(DataConfig(), source="local"))
    assert str(from_registry.value) == str(from_config.value)
    data.check_source(DataConfig())  # wordnet: data.path is optional
    hub = DataConfig(source="hub", hub_id="org/qa")
    assert data.describe_source(hub) == "hub (org/qa)"
    assert data.describe_source(DataConfig(source="local", path="qa.jsonl")) == "local (qa.jsonl)"
    assert data.describe_source(DataConfig()) == "wordnet"
