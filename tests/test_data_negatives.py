"""Hard-negative mining: the model miner, static miners, the retriever, the stage."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config

from rerank_sweeps import data
from rerank_sweeps.cache import Cache
from rerank_sweeps.config import MiningConfig, UserError
from rerank_sweeps.data import QAPair, normalize
from rerank_sweeps.data import mining as model_miner
from rerank_sweeps.validation import validate

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
    monkeypatch.setattr(model_miner, "SIMILARITY_BUDGET", 5 * len(rows))  # chunks of 5 questions
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


def test_a_static_miner_without_model2vec_is_one_line_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "model2vec", None)  # as if not installed
    monkeypatch.setenv("RERANK_SWEEPS_MODELS", str(tmp_path))
    with pytest.raises(UserError, match="needs model2vec: pip install") as err:
        data.distill_static("tiny-random/bert")
    assert "\n" not in str(err.value)
    target = data.static_model_dir("tiny-random/bert")
    assert [p.name for p in tmp_path.iterdir()] == [target.name + ".lock"]


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
