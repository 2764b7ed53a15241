"""Evaluation: hand-checked metrics, TREC files, the ceiling, shared candidates, failures, and
cached reranking against live LanceDB queries."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config

from rerank_sweeps import archs, rerankers, stats
from rerank_sweeps import evaluate as ev
from rerank_sweeps.archs import Architecture
from rerank_sweeps.archs.colbert import ColBERTReranker
from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import ConfigError
from rerank_sweeps.validation import validate

# -- a hand-made fixture: 6 documents, 2 queries, legs written by hand ----------------------

TEXTS = {f"d{i}": f"t{i}" for i in range(1, 7)}
# Lookup "model": the score of a document is fixed by its text (query-independent).
SCORES = {"t1": 0.1, "t2": 0.9, "t3": 0.5, "t4": 0.2, "t5": 0.3, "t6": 0.8}
QUERIES = [
    ("q1", "first question", ["d2"]),
    ("q2", "second question", ["d4", "d6"]),
]
LEGS = {
    "q1": {"vector": ["d1", "d2", "d3", "d4"], "fts": ["d5", "d2", "d6", "d1"]},
    "q2": {"vector": ["d3", "d4", "d1", "d2"], "fts": ["d6", "d5", "d3", "d1"]},
}
L3 = 1 / math.log2(3)  # discount of rank 2


class LookupReranker(rerankers.ModelReranker):
    """Scores from model/scores.json; raises on questions listed under "raise_on"."""

    def _score_pairs(self, queries: list[str], texts: list[str]) -> np.ndarray:
        spec = json.loads((self.model_dir / "scores.json").read_text())
        for q in queries:
            if q in spec.get("raise_on", []):
                raise ValueError("boom")
        return np.array([spec["scores"][t] for t in texts], dtype=np.float32)


class LookupArch(Architecture):
    """An architecture whose saved model is a table of scores (scores.json)."""

    name = "lookup"
    title = "lookup table"
    loader = "scores.json"
    losses = ("none",)

    def reranker_class(self) -> type[rerankers.ModelReranker]:
        return LookupReranker


@pytest.fixture(autouse=True)
def _lookup_arch(monkeypatch):
    monkeypatch.setitem(archs.ARCHITECTURES, "lookup", LookupArch())


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _art(stage: str, path: Path) -> Artifact:
    return Artifact(stage, path.name, path, hit=True)


def make_split(
    root: Path, texts: dict[str, str], queries: list[tuple[str, str, list[str]]]
) -> Artifact:
    """A split artifact in the brief's format (only the files evaluation reads)."""
    root.mkdir(parents=True)
    _write_jsonl(root / "corpus.jsonl", [{"id": i, "text": t} for i, t in texts.items()])
    _write_jsonl(
        root / "eval.jsonl", [{"qid": q, "question": s, "relevant": r} for q, s, r in queries]
    )
    return _art("split", root)


def make_candidates(root: Path, depth: int = 4) -> Artifact:
    """The hand-written legs as a candidates artifact (row id = the document's number)."""
    root.mkdir(parents=True)
    rows = []
    for qid, question, _ in QUERIES:
        row = {"qid": qid, "question": question}
        for leg, ids in LEGS[qid].items():
            rowids = [int(i[1:]) for i in ids]
            if leg == "vector":  # ascending distances
                row[leg] = {"ids": ids, "rowids": rowids, "distances": [0.1, 0.2, 0.3, 0.4]}
            else:  # descending BM25 scores
                row[leg] = {"ids": ids, "rowids": rowids, "scores": [4.0, 3.0, 2.0, 1.0]}
        rows.append(row)
    _write_jsonl(root / "candidates.jsonl", rows)
    (root / "stats.json").write_text(json.dumps({"depth": depth, "legs": ["fts", "vector"]}))
    return _art("candidates", root)


def make_lookup_model(
    root: Path, scores: dict[str, float], raise_on: tuple[str, ...] = ()
) -> Artifact:
    """A model artifact whose reranker.json selects the lookup reranker."""
    (root / "model").mkdir(parents=True)
    (root / "model" / "scores.json").write_text(
        json.dumps({"scores": scores, "raise_on": list(raise_on)})
    )
    meta = {"arch": "lookup", "base": "none", "model_id": "lookup", "epochs": 0, "negatives": 0}
    (root / "reranker.json").write_text(json.dumps(meta))
    return _art("model", root)


def hand_conf(outputs: Path):
    cfg = compose_config(
        [
            "experiment=tiny",
            f"paths.root={outputs}",
            "top_k=[1,2]",
            "overfetch=2",
            "eval.depth=null",  # the blog's overfetch x k protocol
            "query_type=all",
            "eval.bootstrap=200",
            "eval.device=cpu",
        ]
    )
    return validate(cfg)


@pytest.fixture
def hand_run(tmp_path, outputs):
    conf = hand_conf(outputs)
    split = make_split(tmp_path / "split", TEXTS, QUERIES)
    cands = make_candidates(tmp_path / "cands")
    model = make_lookup_model(tmp_path / "model", SCORES)
    # A second model that prefers the opposite order: same candidates, other rankings.
    other = make_lookup_model(tmp_path / "other", {t: -s for t, s in SCORES.items()})
    run_dir = tmp_path / "run"
    results = ev.evaluate(
        conf,
        Cache(outputs / "cache"),
        split,
        cands,
        {"reranked": model, "untrained": other},
        run_dir,
    ).results
    return results, run_dir


def test_metrics_match_hand_computed_values(hand_run):
    results, _ = hand_run
    m = results["metrics"]
    # Per query (q1, q2), worked out by hand from LEGS and SCORES in the comments below.
    expected = {
        # vector @1 reranks [d1,d2] / [d3,d4]: baseline misses both, reranked finds d2 for q1.
        "vector/baseline/hit@1": (0 + 0) / 2,
        "vector/reranked/hit@1": (1 + 0) / 2,
        "vector/ceiling/hit@1": (1 + 1) / 2,
        # vector @2: baseline has d2 (q1) and d4 (q2) at rank 2; reranked q2 = [d2,d3,..].
        "vector/baseline/mrr@2": (0.5 + 0.5) / 2,
        "vector/baseline/ndcg@2": (L3 + L3 / (1 + L3)) / 2,
        "vector/reranked/ndcg@2": (1 + 0) / 2,
        "vector/ceiling/ndcg@2": (1 + 1 / (1 + L3)) / 2,
        # fts: reranked puts d2 (0.9) first for q1, d6 (0.8) first for q2.
        "fts/baseline/hit@1": (0 + 1) / 2,
        "fts/reranked/mrr@2": (1 + 1) / 2,
        "fts/reranked/ndcg@2": (1 + 1 / (1 + L3)) / 2,
        # hybrid @1: RRF q1 puts d2 (in both legs) first; q2 ties d3/d6 at 1/61, row id 3 wins.
        "hybrid/baseline/hit@1": (1 + 0) / 2,
        "hybrid/reranked/hit@1": (1 + 1) / 2,
        # hybrid @2 q2: RRF top-2 = [d3, d1]; reranked = [d2, d6, ...] so MRR 1/2.
        "hybrid/baseline/mrr@2": (1 + 0) / 2,
        "hybrid/reranked/mrr@2": (1 + 0.5) / 2,
        "hybrid/reranked/ndcg@2": (1 + L3 / (1 + L3)) / 2,
        "hybrid/ceiling/ndcg@2": (1 + 1) / 2,
        # The reversed model: q1 merged [d1,d2,d5] -> d1 (-0.1) first, a miss; q2 merged
        # [d3,d4,d6,d5] -> d4 (-0.2) first, a hit.
        "hybrid/untrained/hit@1": (0 + 1) / 2,
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, abs=1e-12), key
    paired = results["paired"]["hybrid/reranked-baseline/hit@1"]
    assert paired["diff"] == pytest.approx(0.5)
    assert paired["interval"][0] <= paired["diff"] <= paired["interval"][1]
    # Per query diffs 0 (q1) and 1 (q2): exact McNemar with 1 won, 0 lost is 2 x 1/2 = 1.
    assert paired["p_value"] == 1.0 and paired["test"] == "mcnemar-exact"
    assert paired["discordant"] == [1, 0]
    # MRR is tested by sign flips; 2 queries: all 4 sign vectors are enumerated.
    mrr = results["paired"]["hybrid/reranked-baseline/mrr@2"]
    assert mrr["test"] == "sign-flip" and mrr["permutations"] == 4
    # Wilson for hit = 1/2 of 2 queries, from the textbook formula.
    z = 1.959963984540054
    centre = (0.5 + z * z / 4) / (1 + z * z / 2)
    half = z * math.sqrt(0.25 / 2 + z * z / 16) / (1 + z * z / 2)
    assert results["intervals"]["vector/reranked/hit@1"] == pytest.approx(
        [centre - half, centre + half]
    )
    assert results["counts"]["queries"] == 2
    assert results["counts"]["hybrid/candidates@1"] == (3 + 4) / 2  # merged, de-duplicated
    assert results["protocol"]["depth_per_leg"] == {"1": 2, "2": 4}
    # Both queries have a relevant candidate at depth 2 in every leg (d2 / d4, d2 / d6), though
    # the baseline misses both at vector @1.
    assert results["counts"]["vector/with_relevant@1"] == 2
    assert results["counts"]["fts/with_relevant@1"] == 2


def test_fixed_depth_reranks_the_same_candidates_for_every_k(tmp_path, outputs):
    """eval.depth: one candidate depth per leg for every k, so hit@k is monotone in k."""
    conf = validate(
        compose_config(
            [
                "experiment=tiny",
                f"paths.root={outputs}",
                "top_k=[1,2]",
                "eval.depth=2",
                "query_type=all",
                "eval.bootstrap=50",
                "eval.device=cpu",
            ]
        )
    )
    split = make_split(tmp_path / "split", TEXTS, QUERIES)
    cands = make_candidates(tmp_path / "cands")
    model = make_lookup_model(tmp_path / "model", SCORES)
    results = ev.evaluate(
        conf, Cache(outputs / "cache"), split, cands, {"reranked": model}, tmp_path / "run"
    ).results
    assert results["protocol"]["depth_per_leg"] == {"1": 2, "2": 2}
    assert results["protocol"]["depth_rule"] == "fixed (eval.depth)"
    counts, m = results["counts"], results["metrics"]
    for qt in ("vector", "fts", "hybrid"):
        assert counts[f"{qt}/candidates@1"] == counts[f"{qt}/candidates@2"]
        for system in ("baseline", "reranked", "ceiling"):
            assert m[f"{qt}/{system}/hit@1"] <= m[f"{qt}/{system}/hit@2"]
    # vector @2 reranks [d1,d2] / [d3,d4] (not 4 per leg): q1 -> [d2 (0.9), d1], MRR 1; q2 ->
    # [d3 (0.5), d4 (0.2)], MRR 1/2. With 4 per leg q2 would rank d2 first and score 0.
    assert m["vector/reranked/mrr@2"] == pytest.approx((1 + 0.5) / 2)
    table = (tmp_path / "run" / "table.md").read_text()
    assert "fixed (eval.depth), @1: 2, @2: 2" in table
    assert "2 of 2" in table  # queries with a relevant candidate


def test_depth_below_top_k_is_refused_in_one_line(outputs):
    with pytest.raises(ConfigError, match=r"eval.depth=1 is not allowed: .*largest top_k \(2\)"):
        validate(
            compose_config(
                ["experiment=tiny", f"paths.root={outputs}", "top_k=[1,2]", "eval.depth=1"]
            )
        )


def test_hand_rankings_in_run_files(hand_run):
    _, run_dir = hand_run
    runs = read_trec_run(run_dir / "runs" / "hybrid-baseline@2.trec")
    # RRF q2 over vector [d3,d4,d1,d2] and fts [d6,d5,d3,d1]: d3, d1, d6, then d4/d5 tie
    # at 1/62 (row id 4 first), then d2.
    assert runs["q2"] == ["d3", "d1", "d6", "d4", "d5", "d2"]
    reranked = read_trec_run(run_dir / "runs" / "hybrid-reranked@2.trec")
    assert reranked["q2"] == ["d2", "d6", "d3", "d5", "d4", "d1"]
    ceiling = read_trec_run(run_dir / "runs" / "vector-ceiling@1.trec")
    assert ceiling["q2"] == ["d4", "d3"]


def read_trec_run(path: Path) -> dict[str, list[str]]:
    """An independent TREC run reader: rank by descending score, as trec_eval does."""
    rows: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        qid, q0, doc, _rank, score, _name = line.split()
        assert q0 == "Q0"
        rows[qid].append((float(score), doc))
    return {q: [d for _, d in sorted(r, key=lambda x: -x[0])] for q, r in rows.items()}


def read_qrels(path: Path) -> dict[str, set[str]]:
    qrels: dict[str, set[str]] = defaultdict(set)
    for line in path.read_text().splitlines():
        qid, _, doc, rel = line.split()
        if int(rel) > 0:
            qrels[qid].add(doc)
    return qrels


def recompute(qrels: dict[str, set[str]], run: dict[str, list[str]], k: int) -> dict[str, float]:
    """hit, MRR and nDCG @k written from their definitions, averaged over the qrels' queries."""
    hit, rr, ndcg = [], [], []
    for qid, relevant in qrels.items():
        top = run.get(qid, [])[:k]
        ranks = [i + 1 for i, d in enumerate(top) if d in relevant]
        hit.append(1.0 if ranks else 0.0)
        rr.append(1.0 / ranks[0] if ranks else 0.0)
        dcg = sum(1.0 / math.log2(r + 1) for r in ranks)
        idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(k, len(relevant)) + 1))
        ndcg.append(dcg / idcg)
    n = len(qrels)
    return {"hit": math.fsum(hit) / n, "mrr": math.fsum(rr) / n, "ndcg": math.fsum(ndcg) / n}


def check_trec_reproduces(run_dir: Path) -> int:
    results = json.loads((run_dir / "results.json").read_text())
    qrels = read_qrels(run_dir / "qrels.trec")
    checked = 0
    for path in sorted((run_dir / "runs").glob("*.trec")):
        qt_system, k = path.stem.rsplit("@", 1)
        qt, system = qt_system.split("-", 1)
        for metric, value in recompute(qrels, read_trec_run(path), int(k)).items():
            assert results["metrics"][f"{qt}/{system}/{metric}@{k}"] == value, (path.name, metric)
            checked += 1
    return checked


def test_trec_files_reproduce_results_exactly(hand_run):
    _, run_dir = hand_run
    # 3 query types x 4 systems x 2 k x 3 metrics
    assert check_trec_reproduces(run_dir) == 72


def test_systems_share_candidate_sets_and_ceiling_bounds_hits(hand_run):
    _, run_dir = hand_run
    for qt in ("vector", "fts", "hybrid"):
        for k in (1, 2):
            runs = {
                s: read_trec_run(run_dir / "runs" / f"{qt}-{s}@{k}.trec")
                for s in ("baseline", "reranked", "untrained", "ceiling")
            }
            for qid, _, relevant in QUERIES:
                sets = {s: frozenset(r[qid]) for s, r in runs.items()}
                assert len(set(sets.values())) == 1, (qt, k, qid)
                ceiling_hit = bool(set(runs["ceiling"][qid][:k]) & set(relevant))
                for s in ("baseline", "reranked", "untrained"):
                    assert bool(set(runs[s][qid][:k]) & set(relevant)) <= ceiling_hit


def test_a_failing_query_fails_the_run_and_is_named(tmp_path, outputs):
    conf = hand_conf(outputs)
    split = make_split(tmp_path / "split", TEXTS, QUERIES)
    cands = make_candidates(tmp_path / "cands")
    model = make_lookup_model(tmp_path / "model", SCORES, raise_on=("second question",))
    with pytest.raises(ev.EvaluationError, match=r"q2 \('second question'\).*ValueError: boom"):
        ev.evaluate(
            conf, Cache(outputs / "cache"), split, cands, {"reranked": model}, tmp_path / "run"
        )
    assert not (tmp_path / "run" / "results.json").exists()


def test_metric_definitions():
    assert ev.query_metrics(["a", "b", "c"], {"c"}, 3) == {
        "hit": 1.0,
        "mrr": 1 / 3,
        "ndcg": pytest.approx(0.5),  # 1/log2(4) over an ideal of 1
    }
    assert ev.query_metrics(["a", "b", "c"], {"c"}, 2) == {"hit": 0.0, "mrr": 0.0, "ndcg": 0.0}
    # Two relevant, found at ranks 1 and 3, k=3: (1 + 1/2) / (1 + 1/log2(3)).
    got = ev.query_metrics(["x", "n", "y"], {"x", "y"}, 3)
    assert got["ndcg"] == pytest.approx(1.5 / (1 + L3))
    assert ev.query_metrics([], {"x"}, 5) == {"hit": 0.0, "mrr": 0.0, "ndcg": 0.0}


def test_sign_flip_p_value_is_small_for_a_consistent_gain_and_one_for_none():
    # evaluate.sign_flip_p_value moved to stats.paired_comparison (the one paired test).
    gain = stats.paired_comparison(np.ones(30), "mrr", permutations=2000)
    # Only the all-plus sign vector reaches mean 1: no drawn one did, so p = 1/2001, a floor.
    assert gain.p_value == pytest.approx(1 / 2001) and gain.p_floor
    assert gain.p_text() == "p<0.0005"
    assert stats.paired_comparison(np.zeros(30), "mrr").p_value == 1.0
    mixed = np.array([1.0, -1.0] * 15)
    assert stats.paired_comparison(mixed, "mrr").p_value == 1.0


# -- live LanceDB: candidates and reranking through the user's query path -------------------

LIVE_TEXTS = [
    "a small domesticated feline kept as a pet",
    "a large wild cat with a mane that lives in africa",
    "a loyal canine companion that barks",
    "a four wheeled motor vehicle for roads",
    "a vessel that travels on water carrying people",
    "a tall plant with a wooden trunk and branches",
    "the yellow star at the centre of our solar system",
    "frozen water falling from clouds in winter",
    "a sweet red fruit that grows on trees",
    "a place where books are kept for reading",
    "a building where sick people are treated by doctors",
    "a musical instrument with black and white keys",
    "a machine that performs calculations and runs programs",
    "a device for making telephone calls on the move",
    "a sport played with a round ball and two goals",
    "a hot drink brewed from roasted beans",
    "the natural satellite that orbits the earth",
    "a large body of salt water between continents",
    "a rodent with a long tail that squeaks",
    "a bird that cannot fly and lives in antarctica",
    "a flying insect that makes honey",
    "a room where meals are cooked",
    "a piece of furniture to sleep on",
    "a written message sent by post",
]
LIVE_QUERIES = [
    ("l1", "what is a cat kept at home", ["c0"]),
    ("l2", "which vehicle drives on roads", ["c3"]),
    ("l3", "where do you borrow books", ["c9"]),
    ("l4", "what insect produces honey", ["c20"]),
    ("l5", "zzz qqq", ["c7"]),  # no FTS match at all: an empty FTS leg, never an error
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Split -> index -> candidates, a MiniLM cross-encoder with a seeded random head."""
    import torch
    from sentence_transformers import CrossEncoder

    from rerank_sweeps import index
    from rerank_sweeps.models import MINILM_ID, resolve_model

    root = tmp_path_factory.mktemp("live")
    outputs = root / "outputs"
    conf = validate(
        compose_config(
            [
                "experiment=tiny",
                f"paths.root={outputs}",
                "top_k=[2,3]",
                "overfetch=2",
                "eval.depth=null",  # the blog's overfetch x k protocol
                "query_type=all",
                "eval.bootstrap=50",
                "eval.device=cpu",
                "eval.bf16=false",
            ]
        )
    )
    cache = Cache(conf.paths.cache)
    texts = {f"c{i}": t for i, t in enumerate(LIVE_TEXTS)}
    split = make_split(root / "split", texts, LIVE_QUERIES)
    index_art = index.index_stage(conf, cache, split)
    cand_art = ev.candidates_stage(conf, cache, split, index_art)
    torch.manual_seed(0)
    model_dir = root / "ce"
    ce = CrossEncoder(resolve_model(MINILM_ID), num_labels=1, max_length=64, device="cpu")
    ce.save(str(model_dir / "model"))
    meta = {"arch": "ce", "base": MINILM_ID, "model_id": MINILM_ID, "epochs": 0, "max_length": 64}
    (model_dir / "reranker.json").write_text(json.dumps(meta))
    model_art = _art("model", model_dir)
    results = ev.evaluate(
        conf, cache, split, cand_art, {"reranked": model_art}, root / "run"
    ).results
    return {
        "conf": conf,
        "cache": cache,
        "split": split,
        "index": index_art,
        "cands": cand_art,
        "model": model_art,
        "results": results,
        "run_dir": root / "run",
    }


def test_candidates_are_cached_without_the_model_and_hold_both_legs(live):
    conf, cache = live["conf"], live["cache"]
    again = ev.candidates_stage(conf, cache, live["split"], live["index"])
    assert again.hit and again.key == live["cands"].key
    # query_type=hybrid needs the same two legs: the same artifact.
    hybrid = validate(
        compose_config(
            [
                "experiment=tiny",
                f"paths.root={conf.paths.root}",
                "query_type=hybrid",
                "top_k=[2,3]",
                "overfetch=2",
                "eval.depth=null",  # the blog's overfetch x k protocol
            ]
        )
    )
    assert ev.candidates_key(hybrid) == ev.candidates_key(conf)
    rows = [
        json.loads(x) for x in (live["cands"].path / "candidates.jsonl").read_text().splitlines()
    ]
    assert [r["qid"] for r in rows] == [q for q, _, _ in LIVE_QUERIES]
    assert all(len(r["vector"]["ids"]) == 6 for r in rows)  # overfetch 2 x max k 3
    assert rows[-1]["fts"]["ids"] == []  # "zzz qqq" matches nothing
    stats = json.loads((live["cands"].path / "stats.json").read_text())
    assert stats["vector_search"] == "exact" and stats["fts_empty"] == 1


def test_vector_leg_equals_numpy_brute_force(live):
    from rerank_sweeps import index

    table = index.open_table(live["index"])
    data = table.to_arrow()
    vectors = np.stack(data["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
    ids = data["id"].to_pylist()
    embedder = index.load_embedder(live["conf"].index.embedder, "cpu")
    queries = index.embed(embedder, [q for _, q, _ in LIVE_QUERIES], 8, "")
    rows = [
        json.loads(x) for x in (live["cands"].path / "candidates.jsonl").read_text().splitlines()
    ]
    for qvec, row in zip(queries, rows, strict=True):
        sims = vectors @ qvec
        order = np.argsort(-sims, kind="stable")[:6]
        assert row["vector"]["ids"] == [ids[i] for i in order]
        assert np.allclose(row["vector"]["distances"], 1 - sims[order], atol=1e-5)


def test_cached_reranking_matches_live_lancedb_queries(live):
    """`tbl.search(...).rerank(ours).limit(depth)` gives the order our run files hold."""
    from lancedb.rerankers import RRFReranker

    from rerank_sweeps import index

    table = index.open_table(live["index"])
    ours = archs.load_reranker(live["model"].path, device="cpu", bf16="false")
    embedder = index.load_embedder(live["conf"].index.embedder, "cpu")
    run_dir = live["run_dir"]
    questions = [q for _, q, _ in LIVE_QUERIES]
    qvecs = dict(zip(questions, index.embed(embedder, questions, 8, ""), strict=True))
    compared = 0
    for k in (2, 3):
        depth = 2 * k
        reranked = {
            qt: read_trec_run(run_dir / "runs" / f"{qt}-reranked@{k}.trec")
            for qt in ("vector", "fts", "hybrid")
        }
        baseline = read_trec_run(run_dir / "runs" / f"hybrid-baseline@{k}.trec")
        for qid, question, _ in LIVE_QUERIES:
            qvec = qvecs[question]
            live_hybrid = (
                table.search(query_type="hybrid")
                .vector(qvec)
                .text(question)
                .distance_type("dot")
                .rerank(reranker=ours)
                .limit(depth)
                .to_arrow()["id"]
                .to_pylist()
            )
            # LanceDB slices hybrid results to `limit`; our file keeps the whole merged set.
            assert reranked["hybrid"].get(qid, [])[:depth] == live_hybrid, (qid, k)
            live_vector = (
                table.search(qvec)
                .distance_type("dot")
                .rerank(reranker=ours, query_string=question)
                .limit(depth)
                .to_arrow()["id"]
                .to_pylist()
            )
            assert reranked["vector"][qid] == live_vector
            live_fts = table.search(question, query_type="fts").rerank(reranker=ours).limit(depth)
            assert reranked["fts"].get(qid, []) == live_fts.to_arrow()["id"].to_pylist()
            live_rrf = (
                table.search(query_type="hybrid")
                .vector(qvec)
                .text(question)
                .distance_type("dot")
                .rerank(reranker=RRFReranker())
                .limit(depth)
                .to_arrow()["id"]
                .to_pylist()
            )
            assert baseline.get(qid, [])[:depth] == live_rrf
            compared += 1
    assert compared == 2 * len(LIVE_QUERIES)


def test_live_run_files_reproduce_results_and_ceiling_bounds(live):
    check_trec_reproduces(live["run_dir"])
    m = live["results"]["metrics"]
    for qt in ("vector", "fts", "hybrid"):
        for k in (2, 3):
            for system in ("baseline", "reranked"):
                assert m[f"{qt}/{system}/hit@{k}"] <= m[f"{qt}/ceiling/hit@{k}"]
    table = (live["run_dir"] / "table.md").read_text()
    assert "| reranked |" in table and "hybrid @3" in table
    # Every pair was scored once, in the scores stage; evaluation only looked scores up.
    info = live["results"]["systems"]["reranked"]
    assert info["pairs"] == sum(
        len(set(r["vector"]["ids"]) | set(r["fts"]["ids"]))
        for r in map(json.loads, (live["cands"].path / "candidates.jsonl").read_text().splitlines())
    )
    assert info["bf16"] is False and info["device"] == "cpu"


def test_threaded_tokenisation_gives_the_same_scores(live):
    """The GPU path tokenises ahead in worker threads; scores must not depend on it."""
    inline = archs.load_reranker(live["model"].path, device="cpu", bf16="false", batch_size=4)
    threaded = archs.load_reranker(live["model"].path, device="cpu", bf16="false", batch_size=4)
    threaded.tokenize_workers = 2
    queries = [q for _, q, _ in LIVE_QUERIES for _ in range(3)]
    texts = LIVE_TEXTS[: len(queries)]
    expected = inline.score_pairs(queries, texts)
    assert np.array_equal(threaded.score_pairs(queries, texts), expected)
    assert threaded.pairs_scored == len(queries) and threaded.forward_seconds > 0
    # score() batches differently (other padding): equal up to float rounding.
    first = inline.score(queries[0], texts[:3])
    assert np.allclose(first, expected[:3], atol=1e-5)


def test_colbert_reranker_scores_match_pylate_maxsim(tmp_path):
    """load_reranker picks the ColBERT class from reranker.json; its MaxSim equals PyLate's."""
    import torch
    from pylate import models, scores

    from rerank_sweeps.models import MINILM_ID, resolve_model

    torch.manual_seed(0)
    colbert = models.ColBERT(
        resolve_model(MINILM_ID),
        embedding_size=32,
        query_length=16,
        document_length=48,
        device="cpu",
    )
    colbert.save(str(tmp_path / "model"))
    meta = {"arch": "colbert", "base": MINILM_ID, "model_id": MINILM_ID, "epochs": 0}
    (tmp_path / "reranker.json").write_text(
        json.dumps({**meta, "max_length": 48, "query_length": 16})
    )
    ours = archs.load_reranker(tmp_path, device="cpu", bf16="false", batch_size=4)
    assert isinstance(ours, ColBERTReranker)
    query, docs = "what is a cat kept at home", LIVE_TEXTS[:5]
    got = ours.score(query, docs)
    q = colbert.encode([query], is_query=True, convert_to_tensor=False)
    d = colbert.encode(docs, is_query=False, convert_to_tensor=False)
    expected = [float(scores.colbert_scores(q, [doc])[0, 0]) for doc in d]
    assert np.allclose(got, expected, atol=1e-4)
    assert ours.forward_seconds > 0
    # Through LanceDB's interface: the hybrid union reranked by these scores, best first.
    import pyarrow as pa

    vec = pa.table(
        {
            "id": ["c0", "c1", "c2"],
            "text": docs[:3],
            "_distance": [0.1, 0.2, 0.3],
            "_rowid": pa.array([0, 1, 2], pa.uint64()),
        }
    )
    fts = pa.table(
        {
            "id": ["c2", "c3", "c4"],
            "text": [docs[2], docs[3], docs[4]],
            "_score": [3.0, 2.0, 1.0],
            "_rowid": pa.array([2, 3, 4], pa.uint64()),
        }
    )
    out = ours.rerank_hybrid(query, vec, fts)
    assert out["id"].to_pylist() == [f"c{i}" for i in np.argsort(-np.asarray(got), kind="stable")]
    assert "_distance" not in out.column_names and "_score" not in out.column_names


def test_hybrid_baseline_is_lancedb_rrf_order_ties_included():
    """Ties between a vector-only and an FTS-only row keep LanceDB's merge order (vector leg
    first), not row-id order: a (row 10) and c (row 1) tie at 1/61, b and d at 1/62."""
    import pyarrow as pa
    from lancedb.rerankers import RRFReranker

    rng = np.random.default_rng(7)
    cases = [
        ({"ids": ["a", "b"], "rowids": [10, 11]}, {"ids": ["c", "d"], "rowids": [1, 2]}),
        (
            {"ids": ["a", "b", "c"], "rowids": [5, 3, 9]},
            {"ids": ["c", "e", "a"], "rowids": [9, 1, 5]},
        ),
    ]
    for _ in range(30):  # random legs over few rows: ties and overlaps are common
        rows = rng.permutation(12)[: rng.integers(1, 8)]
        other = rng.permutation(12)[: rng.integers(1, 8)]
        cases.append(
            (
                {"ids": [f"d{r}" for r in rows], "rowids": [int(r) for r in rows]},
                {"ids": [f"d{r}" for r in other], "rowids": [int(r) for r in other]},
            )
        )
    for vector, fts in cases:
        tables = []
        for leg, col in ((vector, "_distance"), (fts, "_score")):
            n = len(leg["ids"])
            tables.append(
                pa.table(
                    {
                        "id": pa.array(leg["ids"], type=pa.string()),
                        col: pa.array(np.linspace(0.1, 0.9, n), type=pa.float32()),
                        "_rowid": pa.array(leg["rowids"], type=pa.uint64()),
                    }
                )
            )
        live = RRFReranker().rerank_hybrid("q", tables[0], tables[1])["id"].to_pylist()
        assert ev.rrf_order(vector, fts) == live, (vector, fts)
    assert ev.rrf_order(*cases[0]) == ["a", "c", "b", "d"]
