"""CPU inference backends for our rerankers: ONNX Runtime and OpenVINO (latency optimisations).

The tokens (`speedups.BACKENDS`), each usable alone or with `sort` (`onnx-int8+sort`):

- `onnx`: the model exported to ONNX (`torch.onnx.export`, the torch.export-based exporter),
  run by ONNX Runtime's CPU execution provider with all of its own graph optimisations.
- `onnx-o3`: that graph after ONNX Runtime's transformer optimiser at optimum's "O3" level
  (extended optimisations, transformer fusions such as SkipLayerNormalization and BiasGelu,
  and the tanh GELU approximation, which changes the numerics slightly).
- `onnx-int8`: dynamic int8 quantisation of the transformer's weight MatMuls with optimum's
  `avx512_vnni` settings (uint8 asymmetric activations, int8 symmetric per-channel weights, no
  reduced range: the VPDPBUSD kernels of AVX512-VNNI). The scoring head (the cross-encoder's
  classifier and pooler, ColBERT's projection) stays float32, as in the torch `int8` path.
- `openvino`: the ONNX export converted to OpenVINO IR with float32 weights, run by OpenVINO's
  CPU plugin in f32 under its latency hint.

Why not sentence-transformers' own `backend="onnx"` / `"openvino"` and its export helpers
(`export_optimized_onnx_model`, `export_dynamic_quantized_onnx_model`): they run through optimum.
optimum-onnx 0.1.0, the newest release, requires transformers < 4.58 (we pin 5.3.0; its
transformers 5 support is huggingface/optimum-onnx#114, unreleased), so the ONNX side cannot be
installed at all. optimum-intel 2.2.0 (OpenVINO) allows transformers 5.3 but pins
huggingface-hub < 1.22 and pulls torchvision, nncf and openvino-tokenizers. The libraries
underneath (onnxruntime, its quantiser and transformer optimiser, openvino) have no such pins,
so we call them directly; the settings above are the ones optimum would have applied.
The TorchScript exporter (`dynamo=False`) is not used: with transformers 5 its BERT graphs
score up to 0.04 away from torch (traced mask handling); the torch.export graph agrees to
1e-7, and every export is checked against torch before it is cached.

Each exported model is a cached artifact (stage `backend`, see `rerank_sweeps.cache`) in the
cache that holds the model artifact. Its key hashes the model artifact's key, the backend, this
module's `BACKEND_VERSION` and the versions of torch and the runtime, so a model is exported
once per backend, and a library upgrade exports again. `onnx-o3`, `onnx-int8` and `openvino`
are derived from the cached `onnx` export, which is their input.

All backends run on the CPU with as many intra-op threads as torch has (`latency.threads`),
so thread settings are the same for every row of the latency table.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from rerank_sweeps.archs import get_arch
from rerank_sweeps.cache import Artifact, Cache, artifact_at
from rerank_sweeps.config import UserError
from rerank_sweeps.speedups import BACKENDS, backbone_linear_names

log = logging.getLogger(__name__)

STAGE = "backend"
BACKEND_VERSION = 1
ONNX_FILE = "model.onnx"
OPENVINO_FILE = "openvino_model.xml"
META_FILE = "backend.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Module -> pip distribution, per backend: what `pip install -e '.[backends]'` provides.
REQUIREMENTS = {
    "onnx": {"onnxruntime": "onnxruntime", "onnx": "onnx", "onnxscript": "onnxscript"},
    "openvino": {"openvino": "openvino", "onnx": "onnx", "onnxscript": "onnxscript"},
}
# A fresh export must reproduce torch's outputs this closely (absolute, float32).
EXPORT_TOLERANCE = 1e-4


def runtime_of(backend: str) -> str:
    """The runtime a backend runs on: onnx (ONNX Runtime) or openvino."""
    return "openvino" if backend == "openvino" else "onnx"


def missing_packages(backend: str) -> list[str]:
    """The pip distributions `backend` needs that are not installed (none: [])."""
    needed = REQUIREMENTS[runtime_of(backend)]
    return [dist for module, dist in needed.items() if importlib.util.find_spec(module) is None]


def _versions(backend: str) -> dict[str, str]:
    from importlib.metadata import version

    names = ["torch", "onnxscript", *(["openvino"] if backend == "openvino" else ["onnxruntime"])]
    return {name: version(name) for name in names}


# --------------------------------------------------------------------------------------------
# Export: the scoring module of each architecture as one ONNX graph
# --------------------------------------------------------------------------------------------


def _sample_features(model: Any, arch: str) -> dict[str, Any]:
    """Two rows of different lengths, tokenised as scoring does (batch and length vary)."""
    queries = ["what does the word bank mean", "red"]
    texts = ["the side of a river where the water meets the land", "a colour"]
    features = get_arch(arch).sample_features(model, queries, texts)
    return {k: features[k] for k in INPUT_NAMES if k in features}


def export_onnx(model: Any, arch: str, out_dir: Path) -> dict[str, Any]:
    """Export the scoring module of `model` (a CrossEncoder or a PyLate ColBERT) to
    out_dir/model.onnx with dynamic batch and length, check it against torch, and return
    its metadata (input names, the largest absolute difference to torch)."""
    import torch

    module, _ = get_arch(arch).export_module(model)
    features = _sample_features(model, arch)
    dims = {name: {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} for name in features}
    path = out_dir / ONNX_FILE
    chatter = io.StringIO()
    # The exporter prints its progress to stdout (kept in our debug log) and warns that
    # torchvision's detection ops cannot be registered, which no reranker uses.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    with (
        torch.inference_mode(False),
        torch.no_grad(),
        contextlib.redirect_stdout(chatter),
        contextlib.ExitStack() as restore,
    ):
        restore.callback(registration.setLevel, level)
        torch.onnx.export(
            module,
            (),
            str(path),
            kwargs=features,
            input_names=list(features),
            output_names=["output"],
            dynamic_shapes=dims,
            dynamo=True,
            external_data=False,
        )
        expected = module(**features).float().numpy()
    log.debug("torch.onnx.export: %s", chatter.getvalue().strip())
    got = OnnxRuntimeRunner(path, threads=1)(features).numpy()
    diff = float(np.abs(got - expected).max())
    if not np.isfinite(diff) or diff > EXPORT_TOLERANCE * max(1.0, float(np.abs(expected).max())):
        raise UserError(
            f"the ONNX export of {arch} differs from torch by {diff:.3g} (tolerance "
            f"{EXPORT_TOLERANCE}): not cached; report the model type "
            f"{get_arch(arch).hf_config(model).model_type!r}"
        )
    return {"inputs": list(features), "max_abs_diff_vs_torch": diff}


def optimize_o3(model: Any, arch: str, src: Path, out_dir: Path) -> dict[str, Any]:
    """ONNX Runtime's transformer optimiser at optimum's O3 level; returns the fusion counts."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    config = get_arch(arch).hf_config(model)
    # Unknown model types get BERT's fusions: they only fire where BERT's patterns match.
    model_type = config.model_type if config.model_type in optimizer.MODEL_TYPES else "bert"
    options = FusionOptions(model_type)
    options.enable_gelu_approximation = True  # what separates optimum's O3 from O2
    if model_type != config.model_type:
        # BERT's SkipLayerNormalization fusion assumes LayerNorms with a bias; ModernBERT's
        # have none and the fusion crashes on them.
        options.enable_skip_layer_norm = False
        options.enable_bias_skip_layer_norm = False
    try:
        optimized = optimizer.optimize_model(
            str(src),
            model_type=model_type,
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            optimization_options=options,
            opt_level=2,
        )
    except Exception as err:  # the optimiser's pattern matchers fail in many ways
        raise UserError(
            f"onnx-o3: ONNX Runtime's transformer optimiser failed on model type "
            f"{config.model_type!r} ({type(err).__name__}: {err}); use onnx instead"
        ) from None
    optimized.save_model_to_file(str(out_dir / ONNX_FILE))
    fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    return {"fusions": fused, "fusion_model_type": model_type}


def _name_scopes(node: Any) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def quantize_int8(model: Any, arch: str, src: Path, out_dir: Path) -> dict[str, Any]:
    """Dynamic int8 quantisation of the backbone's weight MatMuls (optimum's avx512_vnni
    settings); returns how many MatMuls were quantised and how many stayed float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _, prefix = get_arch(arch).export_module(model)
    backbone = {prefix + name for name in backbone_linear_names(get_arch(arch).backbone(model))}
    graph = onnx.load(str(src), load_external_data=False).graph
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    # The exporter records each node's module path; the head's Linear layers are left out.
    chosen = [n.name for n in matmuls if backbone & set(_name_scopes(n))]
    if not chosen:
        raise UserError(
            "onnx-int8: no MatMul of the exported graph maps to a transformer Linear layer "
            "(the exporter's name scopes are missing); refusing to quantise the scoring head"
        )
    quantize_dynamic(
        str(src),
        str(out_dir / ONNX_FILE),
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=chosen,
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        extra_options={
            "WeightSymmetric": True,
            "ActivationSymmetric": False,
            "MatMulConstBOnly": True,
        },
    )
    return {"quantized_matmuls": len(chosen), "float_matmuls": len(matmuls) - len(chosen)}


def convert_openvino(src: Path, out_dir: Path) -> dict[str, Any]:
    """The ONNX graph as OpenVINO IR with float32 weights (OpenVINO compresses to fp16 unless
    told not to, which would change the numerics)."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(src)), str(out_dir / OPENVINO_FILE), compress_to_fp16=False)
    return {"weights": "f32"}


# --------------------------------------------------------------------------------------------
# The cached artifact
# --------------------------------------------------------------------------------------------


def backend_artifact(
    model: Any, arch: str, model_artifact_dir: str | Path, backend: str, cache: Cache | None = None
) -> Artifact:
    """The cached `backend` export of the loaded `model` of a model artifact (built once).

    `cache` defaults to the cache that holds the model artifact.
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    found = artifact_at(Path(model_artifact_dir))
    if found is None:
        raise UserError(
            f"{model_artifact_dir} is not a finished cache artifact: backend exports are "
            "cached per model artifact"
        )
    home, model_art = found
    cache = cache or home
    source: Artifact = model_art
    if backend != "onnx":
        source = backend_artifact(model, arch, model_artifact_dir, "onnx", cache)
    config = {"backend": backend, "arch": arch, "versions": _versions(backend)}

    def build(out_dir: Path, work_dir: Path) -> None:
        del work_dir
        started = time.perf_counter()
        src = Path(source.path) / ONNX_FILE
        if backend == "onnx":
            meta = export_onnx(model, arch, out_dir)
        elif backend == "onnx-o3":
            meta = optimize_o3(model, arch, src, out_dir)
        elif backend == "onnx-int8":
            meta = quantize_int8(model, arch, src, out_dir)
        else:
            meta = convert_openvino(src, out_dir)
        if backend != "onnx":
            meta["inputs"] = json.loads((Path(source.path) / META_FILE).read_text())["inputs"]
        meta.update(config, seconds=round(time.perf_counter() - started, 3))
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
        log.info("backend %s of %s exported: %s", backend, model_art.key, meta)

    return cache.stage(STAGE, BACKEND_VERSION, config, [source], build)


# --------------------------------------------------------------------------------------------
# Running an exported model
# --------------------------------------------------------------------------------------------


class Runner:
    """An exported model on the CPU: feature tensors in, its first output as float32 out.

    `hf_forward` and `st_forward` present it the way the lean scorers call a transformers
    model and a sentence-transformers (PyLate) model, so they keep their tokenisation,
    batching, sorting and score conventions.
    """

    input_names: list[str]
    threads: int
    # Set by `load_runner`: the cached export it runs, its backend name and its backend.json.
    artifact: Artifact
    backend: str
    meta: dict[str, Any]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The first output for numpy `feeds` (one array per input name)."""
        raise NotImplementedError

    def __call__(self, features: Mapping[str, Any]) -> Any:
        """The first output, as a float32 torch tensor, for torch or numpy `features`."""
        import torch

        feeds = {}
        for name in self.input_names:
            value = features[name]
            value = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
            # The lean scorers pass column slices: the runtimes want dense int64 arrays.
            feeds[name] = np.ascontiguousarray(value, dtype=np.int64)
        return torch.from_numpy(np.asarray(self.run(feeds), dtype=np.float32))

    def hf_forward(self, **batch: Any) -> SimpleNamespace:
        """`model(**batch, return_dict=True)` of a transformers model: `.logits`."""
        batch.pop("return_dict", None)
        return SimpleNamespace(logits=self(batch))

    def st_forward(self, features: Mapping[str, Any]) -> dict[str, Any]:
        """`model(features)` of a sentence-transformers model: `["token_embeddings"]`."""
        return {"token_embeddings": self(features)}


class OnnxRuntimeRunner(Runner):
    """An ONNX file in an ONNX Runtime CPU session with `threads` intra-op threads."""

    def __init__(self, path: str | Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1  # one graph, run op after op: no inter-op parallelism
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.threads = int(threads)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The first output of the session."""
        return self.session.run(None, feeds)[0]


class OpenVINORunner(Runner):
    """An OpenVINO IR compiled for the CPU in f32, latency hint, `threads` threads."""

    def __init__(self, path: str | Path, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(
            str(path),
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": int(threads),
                # f32 explicitly: on CPUs with AMX OpenVINO would otherwise run in bf16.
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        self.request = self.compiled.create_infer_request()
        self.input_names = [p.any_name for p in self.compiled.inputs]
        self.output = self.compiled.output(0)
        self.threads = int(threads)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The first output of the compiled model (a copy: the request reuses its buffers)."""
        return np.array(self.request.infer(feeds)[self.output])


def load_runner(
    model: Any,
    arch: str,
    model_artifact_dir: str | Path,
    backend: str,
    cache: Cache | None = None,
    threads: int | None = None,
) -> Runner:
    """The runner of the cached `backend` export (exported first if not cached yet).

    `threads` defaults to torch's intra-op thread count. The runner's `artifact` (the cache
    hit or miss) and `meta` (backend.json) say what it runs.
    """
    import torch

    art = backend_artifact(model, arch, model_artifact_dir, backend, cache)
    n = int(threads or torch.get_num_threads())
    if runtime_of(backend) == "openvino":
        runner: Runner = OpenVINORunner(Path(art.path) / OPENVINO_FILE, n)
    else:
        runner = OnnxRuntimeRunner(Path(art.path) / ONNX_FILE, n)
    runner.artifact = art
    runner.backend = backend
    runner.meta = json.loads((Path(art.path) / META_FILE).read_text())
    return runner
