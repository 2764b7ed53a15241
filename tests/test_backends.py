"""CPU inference backends (ONNX Runtime, OpenVINO) on the tiny random models: each one scores
like fp32, refuses what it cannot run in one line at config validation, and exports a model
artifact once (a cached artifact reused on the next call)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, latency_job

from rerank_sweeps import backends, latency_device, optimize, speedups
from rerank_sweeps.archs import load_reranker
from rerank_sweeps.cache import MARKER, Cache, artifact_at
from rerank_sweeps.config import ConfigError, UserError
from rerank_sweeps.validation import validate

pytestmark = pytest.mark.skipif(
    bool(backends.missing_packages("onnx") or backends.missing_packages("openvino")),
    reason="the backends extra is not installed (pip install -e '.[backends]')",
)

# Pairs of many lengths, several per query (several micro-batches under sort).
QUERIES = ["what does the word mean in this short example"] * 7 + ["red"] * 5
QUERIES += ["what does bank mean", "what does bank mean", "a red apple"]
TEXTS = [("word " * n).strip() for n in range(1, 13)]
TEXTS += ["the side of a river", "a place that keeps money safe", "a fruit of the apple tree"]
# fp32 backends compute what torch computes (up to summation order); onnx-o3's GELU
# approximation and int8's quantisation only have to rank alike (the issue's bar).
EXACT = {"onnx", "openvino"}
MIN_PEARSON = 0.99


def _torch_forward_forbidden(reranker) -> None:
    """Make any forward pass of the torch model fail: the backend must do the work."""

    def refuse(*_):
        raise AssertionError("the torch model ran, not the backend")

    for module in reranker.model.modules():
        module.register_forward_pre_hook(refuse)


@pytest.mark.parametrize("arch", ["ce", "colbert"])
@pytest.mark.parametrize("name", ["onnx", "onnx-o3", "onnx-int8", "openvino", "onnx-int8+sort"])
def test_backend_scores_correlate_with_fp32(tiny_models, arch, name):
    expected = load_reranker(tiny_models[arch], "cpu", False, 64).score_pairs(QUERIES, TEXTS)
    fast = optimize.apply_optimization(
        load_reranker(tiny_models[arch], "cpu", False, 64), name, sort_batch_size=4
    )
    _torch_forward_forbidden(fast)
    got = fast.score_pairs(QUERIES, TEXTS)

    backend = name.split("+")[0]
    assert fast.lean.runner.backend == backend
    assert fast.lean.batch_size == (4 if "sort" in name else 64)
    assert fast.pairs_scored == len(QUERIES)  # through the reranker's own entry point
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.std(expected) > 0  # the random model's scores do vary: a correlation means something
    assert np.corrcoef(got, expected)[0, 1] >= MIN_PEARSON
    if backend in EXACT:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    else:
        assert not np.array_equal(got, expected)  # the O3 / int8 graph really ran

    meta = latency_device._system_meta(fast, name)  # what the latency table records for the row
    assert meta["backend"]["name"] == backend
    assert meta["dtype"] == ("int8-dynamic" if backend == "onnx-int8" else "fp32")
    assert meta["backend"]["threads"] == torch.get_num_threads()
    if backend == "onnx-int8":
        # The transformer's Linear layers are quantised; the scoring head is not.
        assert meta["backend"]["quantized_matmuls"] == 2 * 6  # 2 layers x (q, k, v, o, up, down)
        # Left float: attention's two activation MatMuls per layer, and ColBERT's projection
        # (the cross-encoder's pooler and classifier are Gemm nodes, never quantised).
        assert meta["backend"]["float_matmuls"] == 2 * 2 + (arch == "colbert")
    # Its accuracy is re-scored, never borrowed from the evaluation's fp32 scores.
    scores = latency_device.EvalScoresRef(path="/x", device="cpu", bf16=False)
    job = replace(latency_job(), eval_scores=scores)
    assert latency_device.reusable_eval_scores(job, name) is None


def test_export_is_a_cached_artifact_reused_on_the_next_call(tiny_models, tmp_path, monkeypatch):
    cache = Cache(tmp_path / "cache")
    model_dir = tiny_models["ce"]

    def runner(name: str):
        reranker = optimize.apply_optimization(
            load_reranker(model_dir, "cpu", False, 8), name, cache=cache
        )
        return reranker.lean.runner

    first = runner("onnx-int8")
    assert not first.artifact.hit
    # onnx-int8 is derived from the cached onnx export, which was built on the way.
    marker = json.loads((first.artifact.path / MARKER).read_text())
    onnx_art = cache.lookup("backend", marker["inputs"][0])
    assert onnx_art is not None
    assert json.loads((onnx_art.path / MARKER).read_text())["inputs"] == [model_dir.name]
    assert cache.misses == {"backend"} and len(cache.events) == 2
    exported = first.artifact.path / backends.ONNX_FILE
    stamp = exported.stat().st_mtime_ns

    # By default the export lives in the cache that holds the model artifact.
    fast = optimize.apply_optimization(load_reranker(model_dir, "cpu", False, 8), "onnx")
    assert Path(fast.lean.runner.artifact.path).parent.parent == Path(model_dir).parent.parent
    # A model directory outside any cache has no key to file its export under.
    assert artifact_at(tmp_path) is None
    with pytest.raises(UserError, match="is not a finished cache artifact"):
        backends.backend_artifact(fast.model, "ce", tmp_path, "onnx")

    def no_export(*_args, **_kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(backends, "export_onnx", no_export)
    monkeypatch.setattr(backends, "quantize_int8", no_export)
    second = runner("onnx-int8")
    assert second.artifact.hit and second.artifact.key == first.artifact.key
    assert exported.stat().st_mtime_ns == stamp
    assert runner("onnx").artifact.hit  # the plain export is reused by itself as well
    # Another backend is another artifact of the same model (built from the cached onnx).
    openvino = runner("openvino")
    assert not openvino.artifact.hit
    assert len({first.artifact.key, openvino.artifact.key, onnx_art.key}) == 3


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("[fp32,onnx-fp16]", "is not allowed: one of fp32, .*onnx, onnx-o3, onnx-int8, openvino"),
        ("[onnx+bf16]", "a backend .* combines only with sort"),
        ("[onnx+openvino]", "a backend .* combines only with sort"),
        ("[onnx-int8+int8]", "a backend .* combines only with sort"),
    ],
)
def test_unsupported_backend_tokens_fail_validation_in_one_line(names, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate(compose_config(["experiment=tiny", f"latency.optimizations={names}"]))
    assert "\n" not in str(err.value)


def test_missing_backend_packages_fail_validation_in_one_line(monkeypatch):
    monkeypatch.setitem(backends.REQUIREMENTS, "openvino", {"no_such_module_x": "no-such-dist"})
    with pytest.raises(ConfigError, match=r"needs no-such-dist: pip install -e '\.\[backends\]'"):
        validate(compose_config(["experiment=tiny", "latency.optimizations=[openvino]"]))
    # Only when latency runs: a disabled stage does not need the packages.
    validate(
        compose_config(
            ["experiment=tiny", "latency.optimizations=[openvino]", "latency.enabled=false"]
        )
    )
    assert validate(compose_config(["experiment=tiny", "latency.optimizations=[onnx+sort]"]))


def test_backends_refuse_a_gpu_in_one_line(tiny_models):
    opt = speedups.parse_optimization("onnx-o3+sort")
    assert (opt.backend, opt.sort, opt.dtype, opt.int8) == ("onnx-o3", True, "fp32", False)
    assert "CPU" in speedups.unsupported_reason(opt, "cuda:0")
    assert speedups.unsupported_reason(opt, "cpu") is None
    reranker = load_reranker(tiny_models["ce"], "cpu", False, 8)
    reranker.device = "cuda"  # as loaded on a GPU machine (nothing is moved: it fails first)
    with pytest.raises(ConfigError, match="cannot run on cuda: the onnx backend runs on the CPU"):
        optimize.apply_optimization(reranker, "onnx")
