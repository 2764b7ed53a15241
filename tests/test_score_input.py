"""`arch.score_in_input`: the first stage's cosine written before each passage, the same way
for training tuples and for every scoring call of the saved reranker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import compose_config

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def _cosine(query: str, text: str) -> float:
    """The pair's cosine computed here, apart from the code under test."""
    from sentence_transformers import SentenceTransformer

    from rerank_sweeps.models import resolve_model

    model = SentenceTransformer(resolve_model(EMBEDDER), device="cpu")
    q, t = model.encode([query, text], normalize_embeddings=True)
    return float(np.dot(q, t))


def _conf(root: Path, *extra: str):
    from rerank_sweeps.validation import validate

    return validate(compose_config(["experiment=tiny", f"paths.root={root}", "arch=ce", *extra]))


@pytest.fixture(scope="module")
def scored_model(tmp_path_factory) -> Path:
    """An untrained tiny cross-encoder artifact saved with `arch.score_in_input=true`."""
    from rerank_sweeps import train
    from rerank_sweeps.cache import Cache

    conf = _conf(tmp_path_factory.mktemp("scored"), "arch.score_in_input=true")
    return train.untrained_stage(conf, Cache(conf.paths.cache)).path


def test_the_score_is_a_rounded_percentage_before_the_passage():
    from rerank_sweeps.score_input import format_passage

    assert format_passage(0.714, "a text") == "71 | a text"
    assert format_passage(0.126, "x") == "13 | x"
    assert format_passage(-0.049, "x") == "-5 | x"
    assert format_passage(1.0, "x") == "100 | x"


def test_tuples_carry_each_texts_own_score_in_order():
    from rerank_sweeps.data import NTuple
    from rerank_sweeps.score_input import ScoreInput, format_passage

    rows = [
        NTuple("what does a cat eat", "cats eat fish and mice", ["the moon orbits earth"]),
        NTuple("how to sort a list", "sorted() returns a new list", ["a cat", "fish swim"]),
    ]
    got = ScoreInput(EMBEDDER).tuples(rows)
    for row, out in zip(rows, got, strict=True):
        assert out.question == row.question  # the query is left as it is
        for text, formatted in zip(
            [row.positive, *row.negatives], [out.positive, *out.negatives], strict=True
        ):
            assert formatted == format_passage(_cosine(row.question, text), text)
    # The related pair scores higher than the unrelated one: the number means something.
    assert int(got[0].positive.split(" | ")[0]) > int(got[0].negatives[0].split(" | ")[0])


def test_the_saved_reranker_reads_the_score_on_every_path(scored_model: Path):
    from rerank_sweeps.archs import load_reranker
    from rerank_sweeps.optimize import apply_optimization
    from rerank_sweeps.score_input import META_KEY, format_passage

    meta = json.loads((scored_model / "reranker.json").read_text())
    assert meta[META_KEY] == {"embedder": EMBEDDER}
    card = (scored_model / "model" / "README.md").read_text()
    assert "`71 | passage text`" in card

    query, texts = "what does a cat eat", ["cats eat fish and mice", "the moon orbits earth"]
    formatted = [format_passage(_cosine(query, t), t) for t in texts]
    reranker = load_reranker(scored_model, device="cpu", bf16=False)
    got = reranker.score_pairs([query] * 2, texts)
    np.testing.assert_allclose(got, reranker._score_pairs([query] * 2, formatted), atol=1e-6)
    # The latency speed-ups replace the scoring function, never the formatting: record what
    # reaches the lean scorer.
    lean = apply_optimization(load_reranker(scored_model, device="cpu", bf16=False), "lean")
    seen: list[list[str]] = []
    inner = lean._score_pairs

    def recording(queries: list[str], batch: list[str]) -> np.ndarray:
        seen.append(list(batch))
        return inner(queries, batch)

    lean._score_pairs = recording
    np.testing.assert_allclose(lean.score_pairs([query] * 2, texts), got, atol=1e-5)
    assert seen == [formatted]


def test_training_rows_carry_the_scores_and_the_key_names_the_embedder(tmp_path: Path):
    from rerank_sweeps.archs.ce import CrossEncoderArch, ce_dataset_and_loss
    from rerank_sweeps.data import NTuple
    from rerank_sweeps.train import arch_key

    off, on = _conf(tmp_path), _conf(tmp_path, "arch.score_in_input=true")
    # Off, the key is what it was before the option existed; on, it names the embedder.
    assert "score_in_input" not in arch_key(off)
    assert arch_key(on)["score_in_input"] == {"embedder": EMBEDDER}

    rows = [NTuple("how to sort a list", "sorted() returns a new list", ["fish swim"])]
    arch = CrossEncoderArch()
    assert arch.input_tuples(off, rows) == rows
    from sentence_transformers import CrossEncoder

    from rerank_sweeps.models import resolve_model

    model = CrossEncoder(resolve_model(on.base.model_id), num_labels=1)
    dataset, _ = ce_dataset_and_loss(on, model, arch.input_tuples(on, rows))
    assert dataset["query"] == ["how to sort a list"] * 2
    assert [p.split(" | ", 1)[1] for p in dataset["passage"]] == [
        "sorted() returns a new list",
        "fish swim",
    ]
    assert all(p.split(" | ", 1)[0].lstrip("-").isdigit() for p in dataset["passage"])
