"""stats: exact McNemar, Holm, the test-inversion interval's agreement with its p, and one p
for the same comparison in table.md, the report and docs/results.md."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rerank_sweeps import findings, report_tables, stats
from rerank_sweeps.candidates import EvalItem
from rerank_sweeps.eval_table import markdown_tables
from rerank_sweeps.metrics import Rankings, compute_results
from rerank_sweeps.records import Record


def test_mcnemar_exact_p_is_the_two_sided_binomial_sign_test():
    # b=8, c=2: 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024.
    assert stats.mcnemar_exact_p(8, 2) == 0.109375
    assert stats.mcnemar_exact_p(2, 8) == 0.109375
    assert stats.mcnemar_exact_p(0, 0) == 1.0  # no discordant query: no evidence
    assert stats.mcnemar_exact_p(5, 0) == 2 / 32
    assert stats.mcnemar_exact_p(6, 0) == 2 / 64
    assert stats.mcnemar_exact_p(3, 3) == 1.0  # 2 * 42/64 capped at 1
    # b=10, c=5: 2 * (1 + 15 + 105 + 455 + 1365 + 3003) / 2^15 = 9888 / 32768.
    assert stats.mcnemar_exact_p(10, 5) == pytest.approx(9888 / 32768, abs=1e-15)
    with pytest.raises(ValueError):
        stats.mcnemar_exact_p(-1, 2)


def test_holm_adjusts_step_down_and_keeps_the_order_of_the_raw_p():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert stats.holm([0.2]) == [0.2]  # a family of one is unchanged
    assert stats.holm([]) == []
    rng = np.random.default_rng(3)
    for _ in range(50):
        raw = rng.uniform(0, 0.2, size=int(rng.integers(1, 9))).tolist()
        adjusted = stats.holm(raw)
        for i, j in itertools.permutations(range(len(raw)), 2):
            if raw[i] <= raw[j]:
                assert adjusted[i] <= adjusted[j]  # monotone in the raw p
        assert all(r <= a <= 1.0 for r, a in zip(raw, adjusted, strict=True))


def _agrees(result: stats.PairedResult) -> bool:
    return (result.low <= 0.0 <= result.high) == (result.p_value >= 0.05)


def test_hit_interval_holds_zero_exactly_when_the_mcnemar_p_is_not_significant():
    # Every (won, lost) up to 15 with 60 queries: p crosses 0.05 many times (e.g. 9 vs 1:
    # p = 0.021; 8 vs 2: 0.109).
    seen = set()
    for won in range(16):
        for lost in range(16):
            d = np.array([1.0] * won + [-1.0] * lost + [0.0] * (60 - won - lost))
            r = stats.paired_comparison(d, "hit")
            assert r.p_value == stats.mcnemar_exact_p(won, lost)
            assert (r.won, r.lost, r.test, r.n) == (won, lost, stats.MCNEMAR, 60)
            assert r.low <= r.diff <= r.high
            assert _agrees(r), (won, lost, r)
            seen.add(r.significant)
    assert seen == {True, False}


def test_continuous_interval_holds_zero_exactly_when_the_sign_flip_p_is_not_significant():
    rng = np.random.default_rng(7)
    seen = set()
    for trial in range(80):
        n = int(rng.integers(15, 120))
        # Shifts around 2 standard errors, so p lands on both sides of 0.05.
        d = rng.normal(rng.uniform(-2.5, 2.5) * 0.3 / np.sqrt(n), 0.3, size=n).clip(-1, 1)
        r = stats.paired_comparison(d, "ndcg", permutations=500)
        assert r.test == stats.SIGN_FLIP and r.permutations == 500
        assert r.low <= r.diff <= r.high
        assert _agrees(r), (trial, r)
        seen.add(r.significant)
    assert seen == {True, False}


def test_the_exact_hit_interval_is_the_enumerated_sign_flip_inversion():
    # For few queries the continuous path enumerates every sign vector: on 0/1 diffs it is
    # the same exact test as the hit path (whose p at 0 is McNemar's), so the ends agree.
    rng = np.random.default_rng(11)
    for _ in range(20):
        d = rng.choice([-1.0, 0.0, 1.0], p=[0.2, 0.4, 0.4], size=int(rng.integers(4, 12)))
        hit = stats.paired_comparison(d, "hit")
        flips = stats.paired_comparison(d, "other", permutations=2**d.size)
        assert flips.permutations == 2**d.size and not flips.p_floor
        assert hit.p_value == pytest.approx(flips.p_value, abs=1e-12)
        assert hit.low == pytest.approx(flips.low, abs=1e-5)
        assert hit.high == pytest.approx(flips.high, abs=1e-5)


def test_a_comparison_gives_the_same_numbers_in_any_order_and_process():
    rng = np.random.default_rng(5)
    d = rng.normal(0.05, 0.2, size=80)
    first = stats.paired_comparison(d, "mrr", permutations=1000)
    again = stats.paired_comparison(rng.permutation(d), "mrr", permutations=1000)
    assert first == again  # the seed comes from the sorted differences, not the order
    # A different metric name is a different comparison: another draw, same difference.
    other = stats.paired_comparison(d, "ndcg", permutations=1000)
    assert other.diff == first.diff
    with pytest.raises(ValueError):
        stats.paired_comparison([0.5], "hit")  # a hit difference is -1, 0 or 1
    with pytest.raises(ValueError):
        stats.paired_comparison([], "mrr")


def test_a_p_that_no_permutation_reached_prints_as_below_one_over_b():
    r = stats.paired_comparison(np.full(40, 0.3), "mrr", permutations=2000)
    assert r.p_floor and r.p_value == pytest.approx(1 / 2001)
    assert r.p_text() == "p<0.0005"
    assert r.text().endswith("p<0.0005")
    assert stats.p_text(0.0123) == "p=0.0123"
    assert stats.record_p_text(r.as_record()) == "p<0.0005"
    assert stats.record_p_text({"diff": 0.1, "p_value": 0.012}) == "p=0.012"  # an old record
    record = {"arch": "ce", "base": "minilm", "negatives": 1, "epochs": 1}
    record["paired"] = {"vector/reranked-baseline/mrr@5": r.as_record()}
    assert "+30.0 points [" in report_tables.significance([Record.from_json(record)])
    assert "p<0.0005 (significant)" in report_tables.significance([Record.from_json(record)])


def _rankings(ranks: dict[str, list[int]]) -> Rankings:
    """Rankings over len(ranks['baseline']) queries; query i's relevant doc is `r<i>` and
    each system puts it at rank ranks[system][i] (1-based; 0: not retrieved)."""
    n = len(ranks["baseline"])
    items = [EvalItem(f"q{i}", f"question {i}", frozenset({f"r{i}"})) for i in range(n)]
    rankings = Rankings(items)
    for system, per_query in ranks.items():
        lists = []
        for i, rank in enumerate(per_query):
            docs = [f"x{i}_{j}" for j in range(5)]
            if rank:
                docs.insert(rank - 1, f"r{i}")
            lists.append(docs)
        for k in (1, 3):
            rankings.by_key[("vector", system, k)] = lists
    return rankings


def test_evaluate_and_the_page_report_the_same_p_for_the_same_queries():
    rng = np.random.default_rng(2)
    n = 40
    ranks = {
        "baseline": rng.choice([0, 1, 2, 3], p=[0.4, 0.2, 0.2, 0.2], size=n).tolist(),
        "reranked": rng.choice([0, 1, 2, 3], p=[0.2, 0.5, 0.2, 0.1], size=n).tolist(),
    }
    ranks["ceiling"] = [1 if r else 0 for r in ranks["baseline"]]
    results = compute_results(
        _rankings(ranks), ["vector"], ["baseline", "reranked", "ceiling"], [1, 3], 50, 0
    )
    recorded = results["paired"]["vector/reranked-baseline/hit@3"]
    hit3 = {s: {f"q{i}": float(0 < r <= 3) for i, r in enumerate(ranks[s])} for s in ranks}
    # docs/results.md recomputes per-query hits from the TREC files, keyed and sorted by qid
    # (q0, q1, q10, ...): another order, the same numbers.
    page = stats.paired_by_query(hit3["reranked"], hit3["baseline"])
    assert recorded["p_value"] == page.p_value
    assert recorded["interval"] == [page.low, page.high]
    assert recorded["diff"] == pytest.approx(page.diff, abs=1e-15)
    assert recorded["test"] == "mcnemar-exact" and recorded["discordant"] == [page.won, page.lost]
    # MRR, tested by sign flips: the evaluation's draw is the one any caller gets.
    mrr = {s: np.array([1 / r if 0 < r <= 3 else 0.0 for r in ranks[s]]) for s in ranks}
    again = stats.paired_comparison(
        (mrr["reranked"] - mrr["baseline"])[::-1], "mrr", stats.PERMUTATIONS
    )
    assert results["paired"]["vector/reranked-baseline/mrr@3"] == again.as_record()
    table = markdown_tables(
        {**results, "counts": {"queries": n}}, ["vector"], ["baseline", "reranked", "ceiling"], [3]
    )
    assert f"{page.p_text()}" in table and "exact McNemar for hit" in table


def _family(pairs: list[tuple[float, float]]) -> list[stats.PairedResult]:
    return [stats.PairedResult(d, d - 0.1, d + 0.1, p, 200) for d, p in pairs]


def test_verdicts_need_a_majority_of_the_family_after_holm():
    # 2 of 4 significant raw; Holm [0.04, 0.06, 0.6, 0.6] leaves 1: not reproduced.
    family = _family([(0.1, 0.01), (0.1, 0.02), (0.05, 0.3), (0.02, 0.5)])
    finding = findings.Finding("c", "b", ["l"] * 4, family, 1)
    assert finding.adjusted == pytest.approx([0.04, 0.06, 0.6, 0.6])
    assert finding.verdict.startswith("not shown (1 of 4 significant for it, 0 against")
    assert "2 before" in finding.verdict
    # 3 of 4 after Holm (0.004, 0.006, 0.006, 0.5): a majority, none against.
    strong = _family([(0.1, 0.001), (0.1, 0.002), (0.1, 0.003), (-0.02, 0.5)])
    assert findings._verdict(strong, 1).startswith("reproduced (3 of 4")
    # The mirror: the blog expected a drop.
    assert findings._verdict(strong, -1).startswith("contradicted")
    # Exactly half is no majority.
    half = _family([(0.1, 0.001), (0.1, 0.002), (0.1, 0.5), (0.1, 0.6)])
    assert findings._verdict(half, 1).startswith("not shown (2 of 4")
    # Significant both ways after Holm.
    both = _family([(0.1, 0.001), (-0.1, 0.002), (0.1, 0.003)])
    assert findings._verdict(both, 1).startswith("mixed (2 for, 1 against")
    assert findings._verdict(_family([(0.1, 0.2), (0.0, 1.0)]), 1).startswith(
        "not shown: none of the 2"
    )
    # The page's line shows the raw p, then Holm's, and a hit comparison its discordant pairs.
    line = stats.PairedResult(0.035, 0.005, 0.065, 0.012, 200, stats.MCNEMAR, 0, 12, 5)
    assert line.text(0.048) == "+3.5 [+0.5, +6.5], p=0.012, Holm 0.048 (12 won, 5 lost)"
