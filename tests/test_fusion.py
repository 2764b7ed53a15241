"""The dev signal, the dev gate and score fusion: hand-checked values on the hand-made fixture
of test_evaluate (6 documents, 2 queries, legs written by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import (
    LEGS,
    QUERIES,
    SCORES,
    TEXTS,
    LookupArch,
    hand_conf,
    make_candidates,
    make_lookup_model,
    make_split,
)

from rerank_sweeps import archs, devsignal, fusion
from rerank_sweeps import evaluate as ev
from rerank_sweeps.cache import Cache
from rerank_sweeps.data import Doc, EvalQuery, QAPair, Split


@pytest.fixture(autouse=True)
def _lookup_arch(monkeypatch):
    monkeypatch.setitem(archs.ARCHITECTURES, "lookup", LookupArch())


def _dev_data(tmp_path: Path, depth: int = 4) -> devsignal.DevData:
    split = make_split(tmp_path / "split", TEXTS, QUERIES)
    cands = make_candidates(tmp_path / "cands", depth)
    return devsignal.DevData(
        ev.load_items(split, cands), dict(TEXTS), ["vector", "fts", "hybrid"], depth
    )


def _primed(tmp_path: Path, data: devsignal.DevData, scores: dict[str, float]):
    model = make_lookup_model(tmp_path / "model", scores)
    reranker = archs.load_reranker(model.path, "cpu", False)
    values = [
        np.array([scores[data.texts[d]] for n, d in ev.unique_pairs([it], data.texts)])
        for it in data.items
    ]
    return devsignal.primed_reranker(reranker, data, values)


# -- fusion arithmetic --------------------------------------------------------------------------


def test_convex_fusion_of_a_vector_leg_by_hand(tmp_path):
    """q1's vector leg d1..d4 (distances .1-.4; model scores .1 .9 .5 .2).

    min-max first stage: 1, 2/3, 1/3, 0; min-max model: 0, 1, .5, .125. Weight .5 on the model:
    .5, .833, .417, .0625 -> d2 d1 d3 d4; weight 0 is the distance order, weight 1 the model's.
    """
    data = _dev_data(tmp_path)
    inner = _primed(tmp_path, data, SCORES)
    q1 = data.items[0]
    table = ev.leg_table(q1, "vector", 4, data.texts)
    order = {
        w: fusion.FusedReranker(inner, "convex", {"vector": w})
        .rerank_vector(q1.question, table)["id"]
        .to_pylist()
        for w in (0.0, 0.5, 1.0)
    }
    assert order[0.0] == ["d1", "d2", "d3", "d4"]
    assert order[0.5] == ["d2", "d1", "d3", "d4"]
    assert order[1.0] == ["d2", "d3", "d4", "d1"]
    fused = fusion.FusedReranker(inner, "convex", {"vector": 0.5}).rerank_vector(q1.question, table)
    assert fused["_relevance_score"].to_pylist() == pytest.approx([5 / 6, 0.5, 5 / 12, 0.0625])
    assert "_distance" not in fused.column_names


def test_rrf_fusion_and_the_hybrid_first_stage_by_hand():
    """Weighted RRF of the model's ranks and the first stage's; hybrid's first stage is the legs'
    RRF (k=60): a key in both legs at ranks 1 and 2 scores 1/61 + 1/62."""
    model = np.array([0.1, 0.9, 0.5])
    first = np.array([3.0, 2.0, 1.0])
    got = fusion.fuse("rrf", 0.25, model, first)
    expected = [0.25 / 63 + 0.75 / 61, 0.25 / 61 + 0.75 / 62, 0.25 / 62 + 0.75 / 63]
    assert got == pytest.approx(expected)
    rrf = fusion.rrf_scores(["a", "b", "c"], ["a", "b"], ["b", "c"])
    assert rrf == pytest.approx([1 / 61, 1 / 62 + 1 / 61, 1 / 62])
    with pytest.raises(ValueError, match="unknown fusion method"):
        fusion.fuse("mean", 0.5, model, first)


def test_fit_weights_takes_the_best_and_breaks_ties_towards_the_reranker():
    values = {"vector": lambda w: -abs(w - 0.3), "fts": lambda w: 1.0}
    fitted = fusion.fit_weights("convex", ["vector", "fts"], lambda qt, w: values[qt](w))
    assert fitted["vector"]["weight"] == pytest.approx(0.3)
    assert fitted["fts"] == {"weight": 1.0, "dev": 1.0}


# -- the dev signal -------------------------------------------------------------------------------


def test_dev_split_holds_dev_answers_and_distractors_never_an_eval_answer():
    split = Split(
        train=[QAPair("t0", "train q", "train answer", "ta")],
        dev=[
            QAPair("d0", "dev q one", "dev answer one", "da1"),
            QAPair("d1", "Dev  Q one", "dev answer two", "da2"),  # same question, 2nd answer
            QAPair("d2", "dev q two", "dev answer one", "da1"),  # shared answer
        ],
        eval=[EvalQuery("q0", "eval q", ["c1"])],
        corpus=[Doc("c1", "eval answer"), Doc("c2", "distractor a"), Doc("c3", "distractor b")],
    )
    queries, corpus, stats = devsignal.make_dev_split(split, seed=13)
    texts = {d.id: d.text for d in corpus}
    assert sorted(texts.values()) == [
        "dev answer one",
        "dev answer two",
        "distractor a",
        "distractor b",
    ]
    assert [q.question for q in queries] == ["dev q one", "dev q two"]
    assert sorted(texts[i] for i in queries[0].relevant) == ["dev answer one", "dev answer two"]
    assert [texts[i] for i in queries[1].relevant] == ["dev answer one"]
    assert stats == {"queries": 2, "dev_answers": 2, "distractors": 2, "corpus": 4}


def test_first_stage_and_reranker_dev_metrics_by_hand(tmp_path):
    """q1 (relevant d2): vector d1 d2 d3 d4 -> nDCG@10 1/log2(3); the lookup model puts d2 first
    in every leg it is in. q2 (relevant d4, d6): fts d6 d5 d3 d1 -> d6 first: nDCG@10 1/(1+L3).
    """
    data = _dev_data(tmp_path)
    first = devsignal.first_stage_metrics(data)
    l3 = 1 / np.log2(3)
    assert first["vector_hit@5"] == 1.0
    # q2's vector leg d3 d4 d1 d2 (relevant d4, d6): DCG 1/log2(3), ideal 1 + 1/log2(3).
    assert first["vector_ndcg@10"] == pytest.approx((l3 + l3 / (1 + l3)) / 2, abs=1e-6)
    q1_vector = devsignal.ranking_metrics(
        devsignal.DevData([data.items[0]], data.texts, ["vector"], 4), ev.baseline_ranking
    )
    assert q1_vector["vector_ndcg@10"] == pytest.approx(l3, abs=1e-6)
    assert q1_vector["vector_mrr@5"] == pytest.approx(0.5)
    reranked = devsignal.reranker_metrics(data, _primed(tmp_path, data, SCORES))
    assert reranked["fts_ndcg@10"] >= first["fts_ndcg@10"]
    one = devsignal.DevData([data.items[0]], data.texts, ["vector"], 4)
    assert devsignal.reranker_metrics(one, _primed(tmp_path / "a", one, SCORES))[
        "vector_ndcg@10"
    ] == pytest.approx(1.0)
    assert reranked["ndcg@10"] == pytest.approx(
        np.mean([reranked[f"{qt}_ndcg@10"] for qt in data.types])
    )


def test_dev_gate_fires_on_a_reranker_worse_than_the_first_stage(tmp_path):
    data = _dev_data(tmp_path)
    worse = {t: -s for t, s in SCORES.items()}  # puts every relevant document last
    reranked = devsignal.reranker_metrics(data, _primed(tmp_path, data, worse))
    first = devsignal.first_stage_metrics(data)
    verdict = devsignal.gate(reranked, first)
    assert verdict["passed"] is False
    assert verdict["reranked"] < verdict["first_stage"]
    assert set(verdict["per_type"]) == {"vector", "fts", "hybrid"}
    assert "does not beat the first stage" in devsignal.gate_message(verdict)
    better = devsignal.reranker_metrics(data, _primed(tmp_path / "b", data, SCORES))
    assert devsignal.gate(better, first)["passed"] is True


def test_fusion_weights_are_fit_on_dev_and_the_evaluation_uses_them_unchanged(tmp_path):
    """Fit on dev data where the model is wrong: the fit keeps the reranker's weight small and
    is never below weight 0 (= the first stage for vector and fts). The evaluation then reads
    the stored weights: with weight 0 the fused vector ranking is the distance order, whatever
    the model says."""
    data = _dev_data(tmp_path)
    worse = {t: -s for t, s in SCORES.items()}
    fitted = devsignal.fit_fusion(data, _primed(tmp_path, data, worse))
    first = devsignal.first_stage_metrics(data)
    alone = devsignal.reranker_metrics(data, _primed(tmp_path / "w", data, worse))
    for qt in ("vector", "fts"):
        assert fitted["convex"][qt]["dev"] >= first[f"{qt}_ndcg@10"] - 1e-9
        assert fitted["convex"][qt]["dev"] > alone[f"{qt}_ndcg@10"]

    conf = hand_conf(tmp_path / "out")
    split = make_split(tmp_path / "esplit", TEXTS, QUERIES)
    cands = make_candidates(tmp_path / "ecands")
    model = make_lookup_model(tmp_path / "emodel", SCORES)
    meta = json.loads((model.path / "reranker.json").read_text())
    meta["fusion"] = {"convex": {qt: {"weight": 0.0, "dev": 0.0} for qt in data.types}}
    (model.path / "reranker.json").write_text(json.dumps(meta))
    run_dir = tmp_path / "run"
    results = ev.evaluate(
        conf, Cache(tmp_path / "out" / "cache"), split, cands, {"reranked": model}, run_dir
    ).results
    assert results["systems"]["fused"]["weights"] == {"vector": 0.0, "fts": 0.0, "hybrid": 0.0}
    for k in (1, 2):
        assert (
            results["metrics"][f"vector/fused/hit@{k}"]
            == results["metrics"][f"vector/baseline/hit@{k}"]
        )
    lines = (run_dir / "runs" / "vector-fused@2.trec").read_text().splitlines()
    q1 = [line.split()[2] for line in lines if line.startswith("q1 ")]
    assert q1 == LEGS["q1"]["vector"]
    assert "fused" in (run_dir / "table.md").read_text()


# -- the whole path on the tiny model: dev candidates pick the checkpoint, gate and fusion ------


def test_tiny_run_selects_the_best_dev_checkpoint_and_records_gate_and_fusion(tmp_path, caplog):
    from conftest import compose_config

    from rerank_sweeps.pipeline import run

    cfg = compose_config(
        [
            "experiment=tiny",
            f"paths.root={tmp_path}",
            "epochs=2",
            "arch.evals_per_epoch=2",
            "latency.enabled=false",
            "eval.untrained=false",
        ]
    )
    with caplog.at_level("WARNING"):
        result = run(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    history = record["dev_history"]
    steps = [h["step"] for h in history if h["step"] > 0]
    assert len(steps) >= 4  # two per epoch (the last one also ends training)
    best = max(h["ndcg@10"] for h in history if h["step"] > 0)
    first_best = next(h["step"] for h in history if h["step"] > 0 and h["ndcg@10"] == best)
    meta = json.loads((result.artifacts["model"].path / "reranker.json").read_text())
    assert meta["best_checkpoint_step"] == first_best
    assert record["dev"]["ndcg@10"] == pytest.approx(best)
    # The gate compares exactly these two numbers and the console says so when it fails.
    gate = record["dev_gate"]
    assert gate["reranked"] == record["dev"]["ndcg@10"]
    assert gate["first_stage"] == record["dev_first_stage"]["ndcg@10"]
    assert gate["passed"] == (gate["reranked"] > gate["first_stage"])
    warned = any("dev gate" in r.getMessage() for r in caplog.records)
    assert warned == (not gate["passed"])
    # Fusion: weights fit on dev for every query type, a fused row evaluated with its TREC file.
    weights = record["fusion"]["convex"]
    assert set(weights) == {"vector", "fts", "hybrid"}
    assert all(0.0 <= w["weight"] <= 1.0 for w in weights.values())
    assert "hybrid/fused/hit@5" in record["metrics"]
    assert "hybrid/fused-baseline/hit@5" in record["paired"]
    assert (tmp_path / "run" / "runs" / "hybrid-fused@5.trec").is_file()
