"""Structured schemas for every config group, and the one-line errors for bad values.

Hydra composes YAML; `to_run_config(cfg)` turns the composed tree into typed dataclasses.
Type errors come from OmegaConf, range and choice errors from the `__post_init__` checks
below; both surface as `ConfigError` whose message is one line naming the key, the value and
what is allowed.

This is the bottom layer: it imports nothing from the package but `records`. The checks that
need a registry above it (data source names, architectures and their declarations, the
speed-ups, the teacher) are in `validation`, whose `validate(cfg)` is the one entry point.

Over 450 lines on purpose: every group's schema, defaults and self-contained checks in one
place, so a setting is looked up in one file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rerank_sweeps.records import DEV_KS, DEV_PRIMARY, METRICS, LatencyKey, MetricKey


class ConfigError(ValueError):
    """A user error in the configuration: printed as one line, never as a traceback."""


class UserError(RuntimeError):
    """A user-facing failure at run time (missing file, no network): printed as one line."""


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _known_codec(name: str) -> bool:
    import codecs

    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _choice(key: str, value: Any, options: tuple[str, ...]) -> None:
    _check(value in options, key, value, "one of " + ", ".join(options))


@dataclass
class PathsConfig:
    """Where everything is written; all relative to `root`."""

    root: str = "outputs"

    @property
    def cache(self) -> Path:
        """Content-addressed stage artifacts."""
        return Path(self.root) / "cache"

    @property
    def runs(self) -> Path:
        """One directory per run (results.json, TREC files, logs)."""
        return Path(self.root) / "runs"


@dataclass
class DataConfig:
    """A question/answer data source and how it is split."""

    source: str = "wordnet"  # wordnet | pydoc | hub | local
    path: str | None = None  # wordnet: dictionary folder; pydoc: .py folder; local: the file
    hub_id: str = "sentence-transformers/gooaq"
    hub_split: str = "train"
    format: str | None = None  # local files: jsonl | parquet | csv (default: from the suffix)
    encoding: str = "utf-8"  # local jsonl/csv files: a line that does not decode is an error
    question_column: str = "question"
    answer_column: str = "answer"
    max_rows: int | None = None  # rows read from the source before splitting
    train_private: bool = True  # pydoc: private names' docstrings as training-only pairs
    num_train: int = 2400  # training questions
    num_dev: int = 100  # dev questions (carved from the training side)
    num_eval: int = 400  # eval queries
    corpus_size: int = 10000  # rows in the LanceDB table: eval answers + distractors

    def __post_init__(self) -> None:
        # data.source and data.path: `validation` (the data sources' registry).
        if self.format is not None:
            _choice("data.format", self.format, ("jsonl", "parquet", "csv"))
        _check(_known_codec(self.encoding), "data.encoding", self.encoding, "a Python codec name")
        for key in ("num_train", "num_eval", "corpus_size"):
            _check(getattr(self, key) >= 1, f"data.{key}", getattr(self, key), "an integer >= 1")
        _check(self.num_dev >= 0, "data.num_dev", self.num_dev, "an integer >= 0")
        _check(
            self.corpus_size >= self.num_eval,
            "data.corpus_size",
            self.corpus_size,
            f"at least data.num_eval ({self.num_eval})",
        )
        if self.max_rows is not None:
            _check(self.max_rows >= 1, "data.max_rows", self.max_rows, "an integer >= 1 or null")


@dataclass
class MiningConfig:
    """Hard-negative mining with sentence-transformers' `mine_hard_negatives`."""

    source: str = "retriever"  # model: mine with `model_id` | retriever: with index.embedder
    model_id: str = "sentence-transformers/all-mpnet-base-v2"  # never the model being trained
    random_share: float = 0.0  # share of negatives drawn at random instead of by similarity
    legs: list[str] = field(default_factory=lambda: ["vector", "fts"])  # source=retriever
    range_min: int = 0  # skip this many top-ranked answers (likely unlabelled positives)
    range_max: int = 100  # look no deeper than this rank
    margin: float | None = None  # None: no margin, negatives may outscore the positive
    margin_type: str = "relative"  # relative | absolute
    sampling_strategy: str = "top"  # top | random
    batch_size: int = 64
    max_seq_length: int = 128
    dev_negatives: int = 0  # >0: dev tuples for the mined-tuple evaluator (no dev candidates)
    bf16: str = "auto"  # miner dtype: auto (bf16 on AMX CPUs and bf16 GPUs) | true | false

    def __post_init__(self) -> None:
        _choice("mining.source", self.source, ("model", "retriever"))
        _check(bool(self.legs), "mining.legs", self.legs, "a non-empty list of vector, fts")
        for leg in self.legs:
            _choice("mining.legs", leg, ("vector", "fts"))
        _check(0 <= self.random_share <= 1, "mining.random_share", self.random_share, "in [0, 1]")
        _check(self.dev_negatives >= 0, "mining.dev_negatives", self.dev_negatives, ">= 0")
        _choice("mining.bf16", str(self.bf16).lower(), ("auto", "true", "false"))
        _choice("mining.margin_type", self.margin_type, ("relative", "absolute"))
        _choice("mining.sampling_strategy", self.sampling_strategy, ("top", "random"))
        _check(self.range_min >= 0, "mining.range_min", self.range_min, "an integer >= 0")
        _check(
            self.range_max > self.range_min,
            "mining.range_max",
            self.range_max,
            "greater than mining.range_min",
        )
        if self.margin is not None:
            _check(self.margin >= 0, "mining.margin", self.margin, "a number >= 0 or null")
        _check(self.batch_size >= 1, "mining.batch_size", self.batch_size, "an integer >= 1")


@dataclass
class ArchConfig:
    """The reranker architecture and its training hyper-parameters."""

    name: str = "ce"  # ce | colbert
    lr: float = 2e-5
    batch_size: int = 16
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 96  # ce: the pair; colbert: the document
    query_length: int = 32  # colbert only
    embedding_size: int = 128  # colbert projection
    temperature: float = 1.0  # colbert contrastive loss
    pos_weight: float | None = None  # ce BinaryCrossEntropyLoss; None = number of negatives
    # ce only: the first stage's cosine (index.embedder) written before each passage
    # (rerank_sweeps/score_input.py)
    score_in_input: bool = False
    # The training loss (the architecture's `losses`); None = its default (the first).
    loss: str | None = None
    bf16: str = "auto"  # auto | true | false
    evals_per_epoch: int = 1  # dev evaluations (and checkpoints) per epoch
    max_steps: int = -1  # > 0 caps training steps (tests)
    # Also checkpoint when this many minutes passed since the last save (null: only at dev
    # evaluations), so a killed run loses minutes, not an epoch. Not in the cache key.
    checkpoint_minutes: float | None = 10.0
    # Where the distillation losses (the architectures' `teacher_losses`) get their targets: null | miner | a
    # cross-encoder / ColBERT directory | a teacher trained in the same job (an arch config
    # name, or {arch: colbert, base: minilm, epochs: 1, ...}); see rerank_sweeps/teacher.py.
    teacher: Any = None
    teacher_scale: float = 1.0  # teacher scores are multiplied by this before the loss

    def __post_init__(self) -> None:
        # arch.name, arch.loss and arch.teacher: `validation` (the architectures' registry).
        _check(self.teacher_scale > 0, "arch.teacher_scale", self.teacher_scale, "a number > 0")
        _choice("arch.bf16", str(self.bf16).lower(), ("auto", "true", "false"))
        _check(self.lr > 0, "arch.lr", self.lr, "a number > 0")
        _check(self.batch_size >= 1, "arch.batch_size", self.batch_size, "an integer >= 1")
        _check(0 <= self.warmup_ratio < 1, "arch.warmup_ratio", self.warmup_ratio, "in [0, 1)")
        _check(self.max_length >= 8, "arch.max_length", self.max_length, "an integer >= 8")
        _check(self.query_length >= 4, "arch.query_length", self.query_length, "an integer >= 4")
        _check(self.temperature > 0, "arch.temperature", self.temperature, "a number > 0")
        _check(self.evals_per_epoch >= 1, "arch.evals_per_epoch", self.evals_per_epoch, ">= 1")
        if self.pos_weight is not None:
            _check(self.pos_weight > 0, "arch.pos_weight", self.pos_weight, "a number > 0 or null")
        if self.checkpoint_minutes is not None:
            _check(
                self.checkpoint_minutes > 0,
                "arch.checkpoint_minutes",
                self.checkpoint_minutes,
                "a number > 0 or null",
            )


@dataclass
class BaseConfig:
    """The base language model a reranker starts from."""

    name: str = "minilm"
    model_id: str = "sentence-transformers/all-MiniLM-L6-v2"
    pretrained_ce: str | None = None  # a pretrained cross-encoder to fine-tune (init=pretrained)
    pretrained_colbert: str | None = None  # a pretrained ColBERT to fine-tune (init=pretrained)
    trust_remote_code: bool = False


@dataclass
class IndexConfig:
    """The LanceDB table: corpus vectors and a native full-text index."""

    embedder: str = "sentence-transformers/all-MiniLM-L6-v2"  # never the reranker under test
    batch_size: int = 64
    ann: str | None = None  # e.g. IVF_HNSW_SQ; null = exact search
    ann_partitions: int | None = None  # IVF partitions; null = sqrt(rows)
    ann_nprobes: int = 20  # partitions probed per ANN query
    ann_refine_factor: int | None = None  # re-rank refine_factor * k ANN hits exactly

    def __post_init__(self) -> None:
        if self.ann is not None:
            _choice("index.ann", self.ann, ("IVF_PQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ", "IVF_FLAT"))
        if self.ann_partitions is not None:
            _check(
                self.ann_partitions >= 1,
                "index.ann_partitions",
                self.ann_partitions,
                "an integer >= 1 or null",
            )
        _check(self.ann_nprobes >= 1, "index.ann_nprobes", self.ann_nprobes, "an integer >= 1")
        if self.ann_refine_factor is not None:
            _check(
                self.ann_refine_factor >= 1,
                "index.ann_refine_factor",
                self.ann_refine_factor,
                "an integer >= 1 or null",
            )


@dataclass
class QueryTypeConfig:
    """Which LanceDB search modes are evaluated."""

    name: str = "all"
    types: list[str] = field(default_factory=lambda: ["vector", "fts", "hybrid"])
    primary: str = "hybrid"  # the query type the default objective reads

    def __post_init__(self) -> None:
        _check(bool(self.types), "query_type.types", self.types, "a non-empty list")
        for t in self.types:
            _choice("query_type.types", t, ("vector", "fts", "hybrid"))


@dataclass
class EvalConfig:
    """Reranking and metrics."""

    untrained: bool = True  # also evaluate the untrained base model as a reranker
    batch_size: int = 64
    device: str = "auto"  # auto | cpu | cuda
    bootstrap: int = 1000  # bootstrap resamples for the 95% intervals
    # Reranker dtype for evaluation: false (fp32) by default, so scores do not tie where
    # bf16 would round them (ties then fall back to the retrieval order). bf16 is a latency
    # optimisation, measured there with its accuracy change. auto | true | false.
    bf16: str = "false"
    # Candidates per leg, the same for every k (metrics monotone in k, TREC tools that cut a
    # run at k agree). null = the blog's protocol: overfetch * k per k.
    depth: int | None = 20

    def __post_init__(self) -> None:
        _choice("eval.device", self.device, ("auto", "cpu", "cuda"))
        _choice("eval.bf16", str(self.bf16).lower(), ("auto", "true", "false"))
        _check(self.bootstrap >= 0, "eval.bootstrap", self.bootstrap, "an integer >= 0")
        _check(self.batch_size >= 1, "eval.batch_size", self.batch_size, "an integer >= 1")
        if self.depth is not None:
            _check(self.depth >= 1, "eval.depth", self.depth, "an integer >= 1 or null")


@dataclass
class DevConfig:
    """The dev signal: dev questions reranked among their real first-stage candidates.

    One fixed protocol, independent of the evaluation's `top_k` and `query_type`, so that a
    sweep over those never retrains (the dev signal picks the best checkpoint).
    """

    query_types: list[str] = field(default_factory=lambda: ["vector", "fts", "hybrid"])
    depth: int = 20  # candidates per leg (hybrid reranks their union)
    gate: bool = True  # warn (console, record, report) when training does not beat the first stage

    def __post_init__(self) -> None:
        _check(bool(self.query_types), "dev.query_types", self.query_types, "a non-empty list")
        for t in self.query_types:
            _choice("dev.query_types", t, ("vector", "fts", "hybrid"))
        _check(self.depth >= 1, "dev.depth", self.depth, "an integer >= 1")


@dataclass
class RerankConfig:
    """How the trained reranker's score is used at query time."""

    fusion: str = (
        "convex"  # none | convex | rrf: also evaluate the reranker fused with the first stage
    )

    def __post_init__(self) -> None:
        _choice("rerank.fusion", self.fusion, ("none", "convex", "rrf"))


@dataclass
class LatencyConfig:
    """The latency ablation."""

    enabled: bool = True
    candidates: list[int] = field(default_factory=lambda: [20, 50, 100])
    warmup: int = 3
    iterations: int = 20
    queries: int = 20  # distinct eval queries cycled through the timed iterations
    devices: list[str] = field(default_factory=lambda: ["cpu", "cuda"])  # cuda skipped if absent
    optimizations: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    threads: int | None = None  # CPU threads for torch; null = torch's default (all cores)
    batch_size: int = 64  # pairs per forward pass
    sort_batch_size: int = 16  # pairs per forward pass under the `sort` optimisation
    accuracy_queries: int | None = 100  # first eval queries for each optimisation; null = all
    max_hit_drop: float = 0.005  # flag an optimisation losing more hit@flag_k than this
    flag_k: int = 5

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "latency.batch_size", self.batch_size, "an integer >= 1")
        _check(self.sort_batch_size >= 1, "latency.sort_batch_size", self.sort_batch_size, ">= 1")
        _check(self.flag_k >= 1, "latency.flag_k", self.flag_k, "an integer >= 1")
        _check(self.max_hit_drop >= 0, "latency.max_hit_drop", self.max_hit_drop, "a number >= 0")
        if self.threads is not None:
            _check(self.threads >= 1, "latency.threads", self.threads, "an integer >= 1 or null")
        if self.accuracy_queries is not None:
            _check(
                self.accuracy_queries >= 0,
                "latency.accuracy_queries",
                self.accuracy_queries,
                ">= 0",
            )
        for n in self.candidates:
            _check(n >= 1, "latency.candidates", n, "integers >= 1")
        _check(self.warmup >= 0, "latency.warmup", self.warmup, "an integer >= 0")
        _check(self.iterations >= 1, "latency.iterations", self.iterations, "an integer >= 1")
        for d in self.devices:
            _choice("latency.devices", d, ("cpu", "cuda"))
        # The optimisation names (and a backend's packages): `validation`, before any job.


@dataclass
class LoggerConfig:
    """Weights & Biases (or nothing)."""

    name: str = "wandb"  # wandb | none
    project: str = "rerank_sweeps"
    entity: str | None = None
    mode: str = "auto"  # auto (online iff an API key is configured) | online | offline | disabled
    group: str | None = None  # default: the sweep / study
    tags: list[str] = field(default_factory=list)
    log_model: bool = False

    def __post_init__(self) -> None:
        _choice("logger.name", self.name, ("wandb", "none"))
        _choice("logger.mode", self.mode, ("auto", "online", "offline", "disabled"))


@dataclass
class RunConfig:
    """One run: every group, validated."""

    data: DataConfig = field(default_factory=DataConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    query_type: QueryTypeConfig = field(default_factory=QueryTypeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dev: DevConfig = field(default_factory=DevConfig)
    rerank: RerankConfig = field(default_factory=RerankConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment: str = "default"
    seed: int = 13
    negatives: int = 1  # hard negatives per training question
    epochs: int = 1  # 0 = the untrained base model
    init: str = "scratch"  # scratch (from the base LM) | pretrained (a pretrained reranker)
    top_k: list[int] = field(default_factory=lambda: [5, 10])
    overfetch: int = 4  # each leg retrieves overfetch * k candidates
    # [] = the primary query type's reranked hit at the smallest k (hybrid/reranked/hit@5)
    objective: list[str] = field(default_factory=list)

    def _objective_problem(self, name: str) -> str | None:
        """Why an objective key names nothing this run measures: checked before any job
        starts, so a typo never runs to the end and reports NaN."""
        if name.startswith("dev/"):
            return _objective_dev_problem(self, name)
        metric_key = MetricKey.try_parse(name)
        if metric_key is not None:
            return _objective_metric_problem(self, metric_key)
        return _objective_latency_problem(self, LatencyKey.parse(name))

    def __post_init__(self) -> None:
        _check(self.negatives >= 1, "negatives", self.negatives, "an integer >= 1")
        _check(self.epochs >= 0, "epochs", self.epochs, "an integer >= 0")
        _choice("init", self.init, ("scratch", "pretrained"))
        _check(bool(self.top_k), "top_k", self.top_k, "an integer >= 1 or a list of them")
        for k in self.top_k:
            _check(k >= 1, "top_k", k, "an integer >= 1 or a list of them")
        _check(self.overfetch >= 1, "overfetch", self.overfetch, "an integer >= 1")
        if self.eval.depth is not None:
            _check(
                self.eval.depth >= max(self.top_k),
                "eval.depth",
                self.eval.depth,
                f"at least the largest top_k ({max(self.top_k)}), or null for overfetch * k",
            )
        if not self.objective:
            types = self.query_type.types
            qt = self.query_type.primary if self.query_type.primary in types else types[0]
            self.objective = [f"{qt}/reranked/hit@{min(self.top_k)}"]
        # arch.loss, arch.teacher and init=pretrained: `validation` (the architectures).
        for name in self.objective:
            _check(
                re.fullmatch(r"dev/[^/]+", name) is not None
                or MetricKey.try_parse(name) is not None
                or LatencyKey.try_parse(name) is not None,
                "objective",
                name,
                'a metric key like "hybrid/reranked/hit@5", a dev key like "dev/ndcg@10" or a '
                'latency key like "cpu/ce/20/p50_ms"',
            )
        for name in self.objective:
            problem = self._objective_problem(name)
            if problem:
                raise ConfigError(f"objective={name!r} is not allowed: {problem}")
        if self.mining.source == "model" and _same_model(self.mining.model_id, self.base.model_id):
            raise ConfigError(
                f"mining.model_id={self.mining.model_id!r} is the model being trained "
                f"(base={self.base.name}): mine with another model (mining.model_id=...) or "
                "with the first-stage retriever (mining.source=retriever)"
            )


_LATENCY_STATS = tuple(
    f"{part}{stat}_ms"
    for part in ("", "retrieval_", "rerank_")
    for stat in ("p50", "p95", "p99", "mean")
) + ("speedup",)


def _objective_metric_problem(conf: RunConfig, key: MetricKey) -> str | None:
    """Why `qt/system/metric@k` names nothing this run measures (None: it does)."""
    qt, system, metric, k = key.query_type, key.system, key.metric, key.k
    systems = ["baseline", "reranked", "ceiling"]
    if conf.eval.untrained and conf.epochs > 0:
        systems.append("untrained")
    if conf.rerank.fusion != "none":
        systems.append("fused")
    if qt not in conf.query_type.types:
        return f"query type {qt!r} is not evaluated (query_type.types={conf.query_type.types})"
    if system not in systems:
        return f"system {system!r} is not evaluated: choose one of {', '.join(systems)}"
    if metric not in METRICS:
        return f"metric {metric!r} is not one of {', '.join(METRICS)}"
    if k not in conf.top_k:
        return f"k={k} is not in top_k={conf.top_k}"
    return None


def _objective_dev_problem(conf: RunConfig, name: str) -> str | None:
    """Why `dev/<metric>` names nothing the dev evaluation measures (None: it does).

    The dev keys are those of record.json's `dev`: `ndcg@10` (the mean over dev.query_types,
    which picks the checkpoint) or `<type>_<hit|mrr|ndcg>@<5|10>`; a study that optimises one
    of them never looks at the eval set.
    """
    key = name.removeprefix("dev/")
    allowed = [DEV_PRIMARY] + [
        f"{qt}_{m}@{k}" for qt in conf.dev.query_types for m in METRICS for k in DEV_KS
    ]
    if conf.epochs == 0:
        return "a dev key, but epochs=0 trains nothing to evaluate on dev"
    if key not in allowed:
        return f"{key!r} is not a dev metric: choose one of {', '.join(allowed[:4])}, ..."
    return None


def _objective_latency_problem(conf: RunConfig, key: LatencyKey) -> str | None:
    """Why `device/system/N/stat` names nothing the latency stage measures (None: it does)."""
    device, system, stat = key.device, key.system, key.stat
    systems = ["none", conf.arch.name] + [
        f"{conf.arch.name}+{o}" for o in conf.latency.optimizations if o != "fp32"
    ]
    if not conf.latency.enabled:
        return "a latency key, but latency.enabled=false"
    if device not in conf.latency.devices:
        return f"device {device!r} is not in latency.devices={conf.latency.devices}"
    if system not in systems:
        return f"latency system {system!r} is not measured: choose one of {', '.join(systems)}"
    if key.n not in conf.latency.candidates:
        return (
            f"{key.candidates} candidates are not in latency.candidates={conf.latency.candidates}"
        )
    if stat not in _LATENCY_STATS:
        return f"statistic {stat!r} is not one of {', '.join(_LATENCY_STATS)}"
    return None


def _same_model(a: str, b: str) -> bool:
    """Whether two model ids name the same checkpoint (hub id, or its last path part)."""

    def norm(model_id: str) -> str:
        return model_id.rstrip("/").lower().rsplit("/", 1)[-1]

    return norm(a) == norm(b)


# Keys whose value is a list but which users naturally set to one value (`top_k=5`).
_SCALAR_OR_LIST = ("top_k", "objective", "latency.candidates", "dev.query_types", "mining.legs")


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Turn a composed Hydra config into a typed `RunConfig` with the schemas' own checks, or
    raise a one-line ConfigError. `validation.validate` adds the checks against the registries
    and is what callers use; this alone is for configs derived from a validated one."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    for dotted in _SCALAR_OR_LIST:
        *parents, leaf = dotted.split(".")
        node = raw
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and leaf in node and not isinstance(node[leaf], list):
            node[leaf] = [node[leaf]]
    try:
        schema = OmegaConf.structured(RunConfig)
        merged = OmegaConf.merge(schema, raw)
        result = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line_omegaconf(err)) from None
    assert isinstance(result, RunConfig)
    return result


def did_you_mean(dotted: str) -> str:
    """ " (did you mean negatives?)" for a misspelled config key, or "" when nothing is close.

    Keys are matched against the fields of the typed schema at the same depth.
    """
    import dataclasses
    import difflib

    *parents, leaf = dotted.split(".")
    node: Any = RunConfig
    for part in parents:
        fields = (
            {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        )
        if part not in fields:
            return ""
        node = fields[part].default_factory if callable(fields[part].default_factory) else None
        node = type(node()) if node is not None else None
        if node is None:
            return ""
    if not dataclasses.is_dataclass(node):
        return ""
    names = [f.name for f in dataclasses.fields(node)]
    close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {'.'.join([*parents, close[0]])}?)"


def _one_line_omegaconf(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or "config"
    msg = " ".join(str(getattr(err, "msg", None) or err).split())
    converted = re.search(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", msg)
    if converted:
        value, wanted = converted.groups()
        return f"{key}={value} is not allowed: expected {wanted.lower()}"
    if "not in struct" in msg or "not in '" in msg:
        return f"{key}: unknown key{did_you_mean(key)}"
    return f"{key}: {msg}"


_SECRET_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+):(?P<pw>[^@\s]+)@")
_SECRET_KEY = re.compile(r"(api_key|apikey|password|passwd|secret|token)", re.IGNORECASE)


def mask_secrets(value: Any) -> Any:
    """Return a copy of a plain config container with passwords and keys replaced by ***."""
    if isinstance(value, dict):
        return {
            k: ("***" if _SECRET_KEY.search(str(k)) and v else mask_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return _SECRET_URL.sub(r"\g<scheme>:***@", value)
    return value
