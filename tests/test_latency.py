"""Latency ablation: the timing harness on fakes with known sleeps, the optimisation switch on
tiny real models, CUDA skipping without a GPU, flagging, and one small end-to-end stage run
whose accuracy must equal evaluate's own numbers for the same checkpoint."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, latency_job

from rerank_sweeps import latency, latency_device, machine, optimize, speedups, timing
from rerank_sweeps.archs import load_reranker
from rerank_sweeps.cache import Cache
from rerank_sweeps.config import ConfigError
from rerank_sweeps.validation import validate

# -- the harness ---------------------------------------------------------------------------


class SlowStart:
    """A fake reranker: `slow_calls` calls of `slow_s`, then `fast_s` per call."""

    def __init__(self, fast_s: float, slow_s: float, slow_calls: int) -> None:
        self.fast_s, self.slow_s, self.slow_calls = fast_s, slow_s, slow_calls
        self.calls: list[str] = []

    def __call__(self, query: str, candidates: object) -> None:
        self.calls.append(query)
        time.sleep(self.slow_s if len(self.calls) <= self.slow_calls else self.fast_s)


def test_harness_percentiles_match_known_sleeps_and_skip_warmup():
    rerank = SlowStart(fast_s=0.020, slow_s=0.400, slow_calls=3)
    seen: list[str] = []

    def retrieve(query: str) -> str:
        seen.append(query)
        time.sleep(0.005)
        return query

    parts = timing.time_pipeline(["a", "b", "c"], retrieve, rerank, warmup=3, iterations=9)
    assert {k: len(v) for k, v in parts.items()} == {"total": 9, "retrieval": 9, "rerank": 9}
    # Queries are cycled from the first iteration on; the warm-up ones are run, not recorded.
    assert seen == ["a", "b", "c"] * 4
    # The three 400 ms warm-up calls are excluded; sleeps overshoot a little, never undershoot.
    assert max(parts["rerank"]) < 200
    stats = timing.summarize_parts(parts)
    assert 20 <= stats["rerank_p50_ms"] < 35
    assert 5 <= stats["retrieval_p50_ms"] < 20
    assert 25 <= stats["p50_ms"] < 55
    for t, r, q in zip(parts["total"], parts["retrieval"], parts["rerank"], strict=True):
        assert t == pytest.approx(r + q, abs=1e-6)


def test_harness_without_reranker_and_with_synchronize():
    syncs = []
    parts = timing.time_pipeline(
        ["q"],
        lambda q: time.sleep(0.002),
        None,
        warmup=1,
        iterations=4,
        synchronize=lambda: syncs.append(1),
    )
    assert set(parts) == {"total", "retrieval"}
    assert len(parts["total"]) == 4
    # before and after the retrieval of each of the 5 iterations
    assert len(syncs) == 10
    with pytest.raises(ValueError):
        timing.time_pipeline([], lambda q: q, None, 0, 1)


class FakeClock:
    """A clock that only moves when the code under test says work was done."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, ms: float) -> None:
        self.now += ms / 1e3


def test_systems_are_timed_interleaved_after_every_warm_up():
    """A cold retrieval path (first calls slow) must not land in the "none" row: the old order
    timed "none" first and reported it slower than the reranked rows built on it."""
    clock = FakeClock()
    calls: list[tuple[str, str]] = []
    state = {"retrievals": 0, "current": ""}

    def retrieve(query: str) -> str:
        state["retrievals"] += 1
        clock.spend(500.0 if state["retrievals"] <= 4 else 10.0)  # cold for 4 calls
        calls.append((state["current"] or "none", query))
        return query

    def reranker(name: str, cost: float):
        def rerank(query: str, candidates: str) -> None:
            clock.spend(cost)
            calls[-1] = (name, query)

        return rerank

    out = timing.time_systems(
        ["a", "b"],
        retrieve,
        {"none": None, "ce": reranker("ce", 5.0), "ce+bf16": reranker("ce+bf16", 3.0)},
        warmup=2,
        iterations=6,
        clock=clock,
    )
    # 2 warm-up calls per system (6, covering the 4 cold ones), then 6 rounds of 3 systems.
    assert len(calls) == 6 + 18
    rounds = [calls[6 + 3 * i : 9 + 3 * i] for i in range(6)]
    for i, round_ in enumerate(rounds):
        assert {q for _, q in round_} == {"ab"[i % 2]}  # every system on the same query
    firsts = [round_[0][0] for round_ in rounds]
    assert firsts == ["none", "ce", "ce+bf16"] * 2  # the order rotates
    stats = {name: timing.summarize_parts(parts) for name, parts in out.items()}
    assert stats["none"]["p50_ms"] == pytest.approx(10.0)
    assert stats["ce"]["p50_ms"] == pytest.approx(15.0)
    assert stats["ce+bf16"]["rerank_p50_ms"] == pytest.approx(3.0)
    for name in ("ce", "ce+bf16"):
        assert stats[name]["p50_ms"] >= stats["none"]["p50_ms"]
    assert "rerank" not in out["none"]


def test_graphs_token_needs_cuda_and_the_cross_encoder(tiny_models):
    opt = speedups.parse_optimization("bf16+graphs")
    assert opt.graphs and opt.dtype == "bf16"
    assert "CUDA" in speedups.unsupported_reason(opt, "cpu")
    assert speedups.unsupported_reason(speedups.parse_optimization("graphs+compile"), "cuda")
    with pytest.raises(ConfigError, match="cannot run on cpu"):
        optimize.apply_optimization(load_reranker(tiny_models["ce"], "cpu", False, 8), "graphs")


def test_padded_widths_score_alike_and_warm_every_shape(tiny_models):
    """Padding to a multiple (what `graphs` does on a GPU) leaves the scores unchanged, and
    `warm_shapes` runs each (rows, width) a call of those counts can produce."""
    reference = load_reranker(tiny_models["ce"], "cpu", False, 64)
    expected = reference.score_pairs(MANY_Q + QUERIES, MANY_T + TEXTS)
    fast = optimize.apply_optimization(
        load_reranker(tiny_models["ce"], "cpu", False, 64), "sort", sort_batch_size=5
    )
    fast.lean.multiple = 32
    np.testing.assert_allclose(
        fast.score_pairs(MANY_Q + QUERIES, MANY_T + TEXTS), expected, rtol=1e-4, atol=1e-5
    )
    assert fast.lean.chunk_sizes(12) == [2, 5]
    assert fast.lean.chunk_sizes(20) == [5]
    seen: list[tuple[int, ...]] = []
    fast.lean._logits = lambda batch: seen.append(tuple(batch["input_ids"].shape))
    widths = list(range(32, speedups.pad_width(fast.lean.max_length, 32) + 1, 32))
    assert fast.lean.warm_shapes([12, 20]) == 2 * len(widths)
    assert sorted(seen) == sorted((r, w) for r in (2, 5) for w in widths)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["graphs", "bf16+graphs"])
def test_cuda_graphs_score_like_eager(tiny_models, name):
    reference = load_reranker(tiny_models["ce"], "cuda", False, 64)
    expected = reference.score_pairs(MANY_Q + QUERIES, MANY_T + TEXTS)
    fast = optimize.apply_optimization(load_reranker(tiny_models["ce"], "cuda", False, 64), name)
    assert fast.lean.warm_shapes([len(expected)]) >= 1
    captured = len(fast.lean.graphs)
    got = fast.score_pairs(MANY_Q + QUERIES, MANY_T + TEXTS)
    assert len(fast.lean.graphs) == captured  # the timed call met no new shape
    assert np.corrcoef(got, expected)[0, 1] >= 0.99
    if name == "graphs":
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_summarize_hand_checked():
    stats = timing.summarize(list(range(1, 11)))  # 1..10 ms
    # numpy linear interpolation: position (n-1)*q = 9*q
    assert stats == pytest.approx({"p50_ms": 5.5, "p95_ms": 9.55, "p99_ms": 9.91, "mean_ms": 5.5})


# -- optimisation names --------------------------------------------------------------------


def test_parse_optimization_and_system_names():
    opt = speedups.parse_optimization("BF16+sort")
    assert (opt.name, opt.dtype, opt.sort, opt.int8, opt.lean) == (
        "bf16+sort",
        "bf16",
        True,
        False,
        True,
    )
    assert speedups.parse_optimization("fp32").reference
    assert not speedups.parse_optimization("autocast").lean
    assert speedups.system_name("ce", "fp32") == "ce"
    assert speedups.system_name("colbert", "int8+sort") == "colbert+int8+sort"
    for bad in ("fp8", "fp32+sort", "bf16+fp16", "int8+bf16", "sort+sort", "autocast+sort"):
        with pytest.raises(ConfigError, match="latency.optimizations"):
            speedups.parse_optimization(bad)


def test_cuda_paths_skip_cleanly_without_gpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("INFO"):
        devices, skipped = machine.available_devices(["cpu", "cuda", "cpu"])
    assert devices == ["cpu"]
    assert skipped == {"cuda": "torch sees no CUDA device"}
    assert "cuda skipped" in caplog.text
    assert speedups.unsupported_reason(speedups.parse_optimization("int8"), "cuda")
    assert speedups.unsupported_reason(speedups.parse_optimization("fp16"), "cpu")
    assert speedups.unsupported_reason(speedups.parse_optimization("bf16"), "cpu") is None


# -- the switch changes the model actually used (tiny real models) -------------------------


QUERIES = ["what does bank mean", "what does bank mean", "a red apple"]
TEXTS = ["the side of a river", "a place that keeps money safe", "a fruit of the apple tree"]
# A longer batch to exercise length sorting and several micro-batches.
MANY_Q = ["what does the word mean in this short example"] * 7 + ["red"] * 5
MANY_T = [("word " * n).strip() for n in range(1, 13)]


@pytest.mark.parametrize("arch", ["ce", "colbert"])
def test_lean_paths_score_like_the_reranker(tiny_models, arch):
    reference = load_reranker(tiny_models[arch], "cpu", False, 64)
    expected = reference.score_pairs(MANY_Q + QUERIES, MANY_T + TEXTS)
    for name in ("lean", "sort"):
        fast = optimize.apply_optimization(
            load_reranker(tiny_models[arch], "cpu", False, 64), name, sort_batch_size=3
        )
        got = fast.score_pairs(MANY_Q + QUERIES, MANY_T + TEXTS)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert fast.lean.batch_size == (3 if name == "sort" else 64)
        assert fast.pairs_scored == len(expected)  # went through the reranker's own entry point


@pytest.mark.parametrize("arch", ["ce", "colbert"])
def test_optimisation_switch_changes_the_model_used(tiny_models, arch):
    fp32 = optimize.apply_optimization(load_reranker(tiny_models[arch], "cpu", False, 8), "fp32")
    assert "_score_pairs" not in vars(fp32)  # the class's own scoring, untouched
    assert speedups.model_dtype_summary(fp32.model).keys() == {"float32"}

    bf16 = optimize.apply_optimization(load_reranker(tiny_models[arch], "cpu", False, 8), "bf16")
    assert vars(bf16)["_score_pairs"] is bf16.lean
    assert speedups.model_dtype_summary(bf16.model).keys() == {"bfloat16"}
    assert not bf16.bf16  # weights are bf16: no autocast on top

    int8 = optimize.apply_optimization(load_reranker(tiny_models[arch], "cpu", False, 8), "int8")
    quantised = [
        m for m in int8.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)
    ]
    assert len(quantised) == 2 * 6  # tiny BERT: 2 layers x (q, k, v, out, up, down)
    # Only the scoring head stays float32: the classifier (+ BERT's pooler) or ColBERT's projection.
    float_linear = {name for name, m in int8.model.named_modules() if type(m) is torch.nn.Linear}
    assert not speedups.backbone_linear_names(int8.model)
    if arch == "ce":
        assert {n.split(".")[-1] for n in float_linear} <= {"classifier", "dense"}
        assert any(n.endswith("classifier") for n in float_linear)
    else:
        heads = {n for n in float_linear if ".pooler." not in n}  # BERT's pooler is unused here
        assert heads and all(not n.startswith("0.") for n in heads)

    auto = optimize.apply_optimization(
        load_reranker(tiny_models[arch], "cpu", False, 8), "autocast"
    )
    assert auto.bf16 and "_score_pairs" not in vars(auto)

    # Optimised scores still rank like the fp32 model on an easy contrast (sanity, not a bound).
    scores = {n: r.score(QUERIES[0], TEXTS) for n, r in [("fp32", fp32), ("bf16", bf16)]}
    assert np.corrcoef(scores["fp32"], scores["bf16"])[0, 1] > 0.9

    with pytest.raises(ConfigError, match="fp16 is a GPU optimisation"):
        optimize.apply_optimization(load_reranker(tiny_models[arch], "cpu", False, 8), "fp16")


# -- comparison to the reference -----------------------------------------------------------


def _entry(p50: float, hit5: float) -> dict:
    return {
        "latency": {"20": {"rerank_p50_ms": p50, "p50_ms": p50 + 5}},
        "accuracy": {"vector-hit@5": hit5, "fts-hit@5": 0.5},
    }


def test_flagging_and_speedups_against_fp32():
    result = {
        "systems": {
            "none": {"latency": {"20": {"p50_ms": 5.0}}},
            "ce": _entry(100.0, 0.600),
            "ce+bf16": _entry(25.0, 0.596),  # -0.4 point: kept
            "ce+int8": _entry(50.0, 0.594),  # -0.6 point: flagged
        }
    }
    latency.compare_to_reference(result, "ce", ["vector-hit@5", "fts-hit@5"], 0.005)
    s = result["systems"]
    assert s["ce+bf16"]["speedup"] == {"20": 4.0}
    assert s["ce+int8"]["speedup"] == {"20": 2.0}
    assert s["ce+bf16"]["accuracy_delta"]["vector-hit@5"] == pytest.approx(-0.004)
    assert s["ce+bf16"]["flagged"] is False
    assert s["ce+int8"]["flagged"] is True
    assert "flagged" not in s["ce"]
    flat = latency.flatten({"cpu": result})
    assert flat["cpu/ce+bf16/20/speedup"] == 4.0
    assert flat["cpu/ce+int8/eval/flagged"] == 1.0
    assert flat["cpu/ce+bf16/eval/flagged"] == 0.0
    assert flat["cpu/ce+int8/eval/vector-hit@5_delta"] == pytest.approx(-0.006)
    assert flat["cpu/none/20/p50_ms"] == 5.0


# -- the stage, end to end on tiny artifacts -----------------------------------------------

KEY = re.compile(r"^(cpu|cuda)/(none|ce|ce\+[a-z0-9+]+)/(\d+|eval)/[A-Za-z0-9_@.\-]+$")


def test_latency_stage_end_to_end(tmp_path, outputs):
    from rerank_sweeps import data, evaluate, index, train

    conf = validate(
        compose_config(
            [
                "experiment=tiny",
                f"paths.root={outputs}",
                "arch=ce",
                "eval.device=cpu",
                "eval.bf16=false",
                "eval.untrained=false",
                "query_type=vector",
                "top_k=[5]",
                "latency.candidates=[4,8]",
                "latency.warmup=1",
                "latency.iterations=3",
                "latency.queries=2",
                "latency.optimizations=[bf16+sort]",
                "latency.devices=[cpu,cuda]",
                "latency.threads=1",
            ]
        )
    )
    cache = Cache(conf.paths.cache)
    split = data.split_stage(conf, cache)
    idx = index.index_stage(conf, cache, split)
    cand = evaluate.candidates_stage(conf, cache, split, idx)
    model = train.untrained_stage(conf, cache)
    results = evaluate.evaluate(
        conf, cache, split, cand, {"reranked": model}, tmp_path / "eval"
    ).results

    run_dir = tmp_path / "run"
    scores = evaluate.scores_stage(conf, cache, split, cand, model, "reranked")
    assert scores.hit  # the evaluation built it
    flat = latency.latency_stage(conf, split, idx, cand, model, run_dir, scores)

    assert all(KEY.match(k) for k in flat), [k for k in flat if not KEY.match(k)]
    for system in ("none", "ce", "ce+bf16+sort"):
        for n in (4, 8):
            stats = {
                k.split("/")[-1]: v for k, v in flat.items() if k.startswith(f"cpu/{system}/{n}/")
            }
            assert stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
            assert stats["retrieval_p50_ms"] > 0
            assert ("rerank_p50_ms" in stats) == (system != "none")
    assert "cpu/ce+bf16+sort/4/speedup" in flat
    # fp32 reuses the evaluation's fp32 scores; the bf16 weights are re-scored.
    assert systems_of(run_dir)["ce"]["accuracy_source"] == "evaluation scores (cached)"
    assert systems_of(run_dir)["ce+bf16+sort"]["accuracy_source"] == "re-scored"
    assert flat["cpu/ce/eval/vector-hit@5"] == pytest.approx(
        results["metrics"]["vector/reranked/hit@5"]
    )
    assert flat["cpu/ce+bf16+sort/eval/flagged"] in (0.0, 1.0)
    assert not any(k.startswith("cuda/") for k in flat) or torch.cuda.is_available()

    report = json.loads((run_dir / "latency.json").read_text())
    info = report["devices"]["cpu"]["info"]
    assert info["torch_threads"] == 1  # latency.threads reached the measuring process
    assert (
        report["versions"]["torch"] == torch.__version__.split("+")[0]
        or report["versions"]["torch"]
    )
    systems = report["devices"]["cpu"]["systems"]
    assert systems["ce"]["dtype"] == "fp32" and systems["ce"]["max_length"] == conf.arch.max_length
    assert systems["ce+bf16+sort"]["dtype"] == "bf16"
    assert systems["ce+bf16+sort"]["forward_batch_size"] == conf.latency.sort_batch_size
    assert report["protocol"]["warmup"] == 1 and report["protocol"]["iterations"] == 3
    assert report["metrics"] == flat
    if not torch.cuda.is_available():
        assert report["skipped_devices"] == {"cuda": "torch sees no CUDA device"}
    assert "| ce+bf16+sort |" in (run_dir / "latency.md").read_text()


def systems_of(run_dir: Path) -> dict:
    """The cpu systems of a run's latency.json."""
    return json.loads((run_dir / "latency.json").read_text())["devices"]["cpu"]["systems"]


@pytest.mark.parametrize(
    ("device", "eval_device", "eval_bf16", "optimization", "reused"),
    [
        ("cpu", "cpu", False, "fp32", True),
        ("cpu", "cpu", True, "fp32", False),  # bf16 evaluation scores are not fp32 scores
        ("cpu", "cpu", True, "autocast", True),
        ("cpu", "cpu", False, "autocast", False),
        ("cpu", "cpu", True, "bf16", False),  # bf16 weights differ from autocast
        ("cuda:0", "cuda", False, "fp32", True),
        ("cuda:0", "cpu", False, "fp32", False),  # other device, other kernels
    ],
)
def test_eval_scores_reused_only_for_the_same_numerics(
    device, eval_device, eval_bf16, optimization, reused
):
    scores = latency_device.EvalScoresRef("/x/scores/abc", eval_device, eval_bf16)
    job = replace(latency_job(), eval_scores=scores, device=device)
    got = latency_device.reusable_eval_scores(job, optimization)
    assert (got == Path("/x/scores/abc")) if reused else got is None
    assert latency_device.reusable_eval_scores(latency_job(), "fp32") is None


def test_a_latency_job_reads_back_as_written():
    # The child process gets the job as JSON: tuples, int keys and the nested reference
    # must come back as the same typed job, or the child would look up depth_per_leg["5"].
    job = latency_job(
        eval_scores=latency_device.EvalScoresRef("/x/scores", "cpu", True),
        device="cuda:0",
        threads=2,
    )
    again = latency_device.LatencyJob.from_json(job.to_json())
    assert again == job
    assert again.depth_per_leg[5] == 20
    assert again.for_device("cpu").device == "cpu" and job.device == "cuda:0"


def test_bad_optimisation_fails_before_measuring(tmp_path):
    # Config validation refuses it in one line (tests/test_backends.py); a config changed after
    # validation is still refused before any device is measured.
    with pytest.raises(ConfigError, match="fp8"):
        validate(compose_config(["experiment=tiny", "latency.optimizations=[fp8]"]))
    conf = validate(compose_config(["experiment=tiny"]))
    conf.latency.optimizations = ["fp8"]
    art = type("A", (), {"path": Path(tmp_path), "key": "k"})()
    with pytest.raises(ConfigError, match="fp8"):
        latency.build_job(conf, art, art, art, art)
