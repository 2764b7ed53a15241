"""Distillation: where teacher scores come from, and the cached stage that stores them.

`arch.teacher` names a teacher in one of three forms:

- `miner`: the bi-encoder that mines the negatives (`mining.model_id`, or the index's
  embedder with `mining.source=retriever`); a text's score is its cosine similarity with the
  question.
- a directory: a cross-encoder or a PyLate ColBERT (which one is read from its files), or a
  model artifact this framework trained (`<cache>/model/<key>`, with reranker.json).
- a teacher trained here, in the same job: an arch config name (`colbert`) or a mapping
  `{arch: colbert, base: minilm, epochs: 1, lr: ...}`. Its arch settings come from
  `conf/arch/<arch>.yaml` and the mapping's other keys; its base from `conf/base/<base>.yaml`
  (default: the student's); `epochs` and `init` default to the student's; data, mining,
  negatives, seed and the dev signal are the student's. It trains through the same cached
  model stage, so a job that trains that model on its own shares the artifact.

`teacher_scores_stage` scores each training tuple's (question, positive, negatives...) with
the teacher once, in fp32, into its own artifact (key: the negatives artifact and the
teacher's identity). The losses that read it (the architectures' `teacher_losses`) build their datasets with
`margin_mse_rows`, `mse_pairs` and `distillation_rows`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from rerank_sweeps.cache import MARKER, Artifact, Cache
from rerank_sweeps.config import (
    ArchConfig,
    ConfigError,
    RunConfig,
    UserError,
)

if TYPE_CHECKING:
    from rerank_sweeps.data import NTuple
    from rerank_sweeps.devsignal import DevArtifacts

log = logging.getLogger(__name__)

TEACHER_SCORES_VERSION = 1
MINER = "miner"
CONF = Path(__file__).resolve().parent / "conf"
# Keys of a trained-teacher mapping that are not ArchConfig fields.
_RUN_KEYS = ("arch", "base", "epochs", "init")
# ArchConfig fields that a teacher mapping may not set: `name` is its `arch` key.
_NOT_SETTABLE = ("name",)
# Questions scored per call of the teacher (one progress-bar step).
_CHUNK = 64


@dataclass(frozen=True)
class TeacherSpec:
    """A parsed `arch.teacher`."""

    kind: str  # miner | path | trained
    path: str | None = None  # kind=path: the model directory (or model artifact), absolute
    model_kind: str | None = None  # kind=path: ce | colbert
    train: dict[str, Any] | None = None  # kind=trained: {arch: name, base?, epochs?, ...}

    def describe(self) -> Any:
        """The spec in one canonical form (the same teacher written two ways is one key)."""
        if self.kind == MINER:
            return MINER
        if self.kind == "path":
            return self.path
        return dict(sorted((self.train or {}).items()))


@dataclass
class TeacherScores:
    """Teacher scores of the training tuples: `scores[i]` = [positive, *negatives] of tuple i."""

    scores: list[list[float]]
    identity: dict[str, Any]


# ----------------------------------------------------------------------------- the spec


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _group_yaml(group: str, name: str) -> dict[str, Any]:
    loaded = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{name}.yaml"), resolve=True)
    assert isinstance(loaded, dict)
    return {str(k): v for k, v in loaded.items()}


def loss_uses_teacher(loss: str) -> bool:
    """Whether a loss (as `train.loss_name` gives it) trains on teacher scores."""
    from rerank_sweeps.archs import ARCHITECTURES

    return any(loss in arch.teacher_losses for arch in ARCHITECTURES.values())


def uses_teacher(conf: RunConfig) -> bool:
    """Whether this run's loss reads teacher scores (a teacher set for another loss is unused)."""
    from rerank_sweeps.archs import get_arch

    return loss_uses_teacher(get_arch(conf.arch.name).loss_name(conf))


def detect_model_kind(path: Path) -> str:
    """The architecture name of a local model directory, from its files (see each
    architecture's `detect`); else a one-line error."""
    from rerank_sweeps.archs import detect_arch

    arch = detect_arch(path)
    if arch is not None:
        return arch.name
    raise ConfigError(
        f"arch.teacher={str(path)!r} is not allowed: neither a cross-encoder (config.json with a "
        "*ForSequenceClassification architecture) nor a PyLate ColBERT (modules.json with a "
        "pylate module) nor a model artifact (reranker.json)"
    )


def _path_spec(value: str) -> TeacherSpec:
    path = Path(value).expanduser().resolve()
    # `<artifact>/model` is the artifact's model folder: the artifact (with reranker.json)
    # knows the lengths it was trained with.
    if path.name == "model" and (path.parent / "reranker.json").is_file():
        path = path.parent
    if not path.is_dir():
        raise ConfigError(
            f"arch.teacher={value!r} is not allowed: {MINER}, an arch config name "
            f"({', '.join(_options('arch'))}), a mapping {{arch: ..., base: ..., epochs: ...}}, "
            "or a local cross-encoder / ColBERT model directory"
        )
    if (path / "reranker.json").is_file():
        from rerank_sweeps.rerankers import read_reranker_meta

        try:
            kind = read_reranker_meta(path)["arch"]
        except UserError as err:
            raise ConfigError(f"arch.teacher={value!r} is not allowed: {err}") from None
    else:
        kind = detect_model_kind(path)
    return TeacherSpec("path", path=str(path), model_kind=kind)


def _trained_spec(value: dict[str, Any]) -> TeacherSpec:
    shown = json.dumps(value, sort_keys=True, default=str)
    arch_fields = [f.name for f in dataclasses.fields(ArchConfig) if f.name not in _NOT_SETTABLE]
    for key in value:
        if key not in _RUN_KEYS and key not in arch_fields:
            close = difflib.get_close_matches(str(key), [*_RUN_KEYS, *arch_fields], n=1)
            hint = f" (did you mean arch.teacher.{close[0]}?)" if close else ""
            raise ConfigError(
                f"arch.teacher.{key}: unknown key{hint}; a teacher mapping takes "
                f"{', '.join(_RUN_KEYS)} and arch settings"
            )
    if value.get("arch") not in _options("arch"):
        raise ConfigError(
            f"arch.teacher={shown} is not allowed: its arch must name an arch config "
            f"({', '.join(_options('arch'))})"
        )
    if "base" in value and value["base"] not in _options("base"):
        raise ConfigError(
            f"arch.teacher.base={value['base']!r} is not allowed: one of "
            f"{', '.join(_options('base'))}"
        )
    return TeacherSpec("trained", train=dict(value))


def parse_teacher(value: Any) -> TeacherSpec | None:
    """Parse `arch.teacher` (see the module docstring), or raise a one-line ConfigError."""
    if value is None:
        return None
    if isinstance(value, dict):
        return _trained_spec(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"arch.teacher={value!r} is not allowed: {MINER}, an arch config name, a mapping "
            "or a model directory"
        )
    value = value.strip()
    if value == MINER:
        return TeacherSpec(MINER)
    # A bare arch config name is a teacher trained here; `./colbert` is a directory.
    if "/" not in value and value in _options("arch"):
        return TeacherSpec("trained", train={"arch": value})
    return _path_spec(value)


def teacher_run_config(conf: RunConfig, spec: TeacherSpec | None = None) -> RunConfig:
    """The RunConfig that trains a `trained` teacher: the student's, with the teacher's arch,
    base, epochs and init (see the module docstring). Errors name `arch.teacher`."""
    from rerank_sweeps.config import validate

    spec = spec or parse_teacher(conf.arch.teacher)
    if spec is None or spec.kind != "trained" or spec.train is None:
        raise ValueError("teacher_run_config needs a teacher trained here")
    raw = asdict(conf)
    arch = _group_yaml("arch", spec.train["arch"])
    arch.update({k: v for k, v in spec.train.items() if k not in _RUN_KEYS})
    raw["arch"] = arch
    if "base" in spec.train:
        raw["base"] = _group_yaml("base", spec.train["base"])
    raw["epochs"] = spec.train.get("epochs", conf.epochs)
    raw["init"] = spec.train.get("init", conf.init)
    raw["objective"] = []  # never evaluated: the student's objective may name its own arch
    try:
        return validate(OmegaConf.create(raw))
    except ConfigError as err:
        message = str(err)
        # The teacher's own arch keys are the mapping's keys: name them as the user wrote them.
        if message.startswith("arch."):
            raise ConfigError("arch.teacher." + message[len("arch.") :]) from None
        raise ConfigError(f"arch.teacher: {message}") from None


def _training_identity(conf: RunConfig) -> dict[str, Any]:
    """What makes a trained model this one, whichever loss or teacher it learnt from."""
    arch = asdict(conf.arch)
    for name in ("loss", "teacher", "teacher_scale", "checkpoint_minutes"):
        arch.pop(name, None)
    return {"arch": arch, "base": asdict(conf.base), "init": conf.init, "epochs": conf.epochs}


def check_teacher(conf: RunConfig) -> None:
    """Config-time checks of `arch.teacher` (RunConfig calls this): a one-line ConfigError
    for a teacher loss without a teacher, a malformed teacher, an untrained teacher, or a
    teacher that is the model being trained (a cycle)."""
    from rerank_sweeps.archs import get_arch

    loss = get_arch(conf.arch.name).loss_name(conf)
    if loss_uses_teacher(loss) and conf.arch.teacher is None:
        raise ConfigError(
            f"arch.loss={loss!r} is not allowed without a teacher: set arch.teacher "
            f"({MINER}, a model directory, or a teacher to train such as colbert or "
            "{arch: colbert, base: minilm, epochs: 1})"
        )
    spec = parse_teacher(conf.arch.teacher)
    if spec is None or not loss_uses_teacher(loss):
        return
    shown = json.dumps(spec.describe(), default=str)
    if spec.kind == "path":
        start = Path(conf.base.model_id).expanduser()
        if conf.init == "scratch" and start.is_dir() and start.resolve() == Path(str(spec.path)):
            raise ConfigError(
                f"arch.teacher={shown} is not allowed: it is the model being trained (its "
                "starting weights); a teacher must be another, trained model"
            )
        return
    if spec.kind != "trained":
        return
    teacher = teacher_run_config(conf, spec)
    if teacher.epochs == 0:
        raise ConfigError(
            f"arch.teacher={shown} is not allowed: it would be untrained (epochs=0); "
            "give it epochs >= 1"
        )
    if _training_identity(teacher) == _training_identity(conf):
        raise ConfigError(
            f"arch.teacher={shown} is not allowed: it is the model being trained here (a "
            "cycle); give the teacher another arch, base, epochs or setting"
        )


# ----------------------------------------------------------------------------- identity


def _dir_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of a directory's files: a retrained or replaced
    model is a new teacher (cheap: no weights are read)."""
    entries = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        entries.append(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:20]


def teacher_identity(
    conf: RunConfig, spec: TeacherSpec, teacher_art: Artifact | None = None
) -> dict[str, Any]:
    """What the teacher's scores depend on (the teacher scores artifact's key config)."""
    if spec.kind == MINER:
        from rerank_sweeps.data import miner_config

        mining = miner_config(conf)
        return {"kind": MINER, "model_id": mining.model_id, "max_seq_length": mining.max_seq_length}
    if spec.kind == "trained":
        assert teacher_art is not None
        # The model artifact is an input of the scores stage as well; named here so that
        # the student's reranker.json says which model taught it.
        arch = spec.train["arch"] if spec.train else None
        return {"kind": "trained", "arch": arch, "model": teacher_art.key}
    path = Path(str(spec.path))
    marker = path / MARKER
    if marker.is_file():  # a cache artifact: content-addressed by its key
        key = json.loads(marker.read_text()).get("key", path.name)
        return {"kind": spec.model_kind, "artifact": key}
    return {"kind": spec.model_kind, "path": str(path), "files": _dir_fingerprint(path)}


# ----------------------------------------------------------------------------- scoring


def miner_scorer(conf: RunConfig) -> Callable[[list[str], list[str]], list[float]]:
    """Cosine similarity of (query, text) pairs under the mining bi-encoder, in fp32."""
    import numpy as np

    from rerank_sweeps.data import load_miner, miner_config

    # fp32 whatever mining.bf16 says: the scores are training targets, stored once.
    model, _ = load_miner(replace(miner_config(conf), bf16="false"))

    def score(queries: list[str], texts: list[str]) -> list[float]:
        unique = list(dict.fromkeys([*queries, *texts]))
        vectors = model.encode(
            unique,
            batch_size=conf.mining.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)
        row = {text: i for i, text in enumerate(unique)}
        q = vectors[[row[t] for t in queries]]
        d = vectors[[row[t] for t in texts]]
        return [float(v) for v in np.sum(q * d, axis=1)]

    return score


def reranker_scorer(
    conf: RunConfig, spec: TeacherSpec, teacher_art: Artifact | None
) -> Callable[[list[str], list[str]], list[float]]:
    """A cross-encoder's raw logit or a ColBERT's MaxSim per pair, through our LanceDB
    reranker adapters (the scoring the evaluation uses), in fp32."""
    from rerank_sweeps.archs import get_arch
    from rerank_sweeps.rerankers import load_reranker

    options = {"device": conf.eval.device, "bf16": False, "batch_size": conf.eval.batch_size}
    if teacher_art is not None:
        reranker = load_reranker(teacher_art.path, **options)
    else:
        path = Path(str(spec.path))
        if (path / "reranker.json").is_file():
            reranker = load_reranker(path, **options)
        else:
            reranker = get_arch(str(spec.model_kind)).reranker_class()(path, **options)

    def score(queries: list[str], texts: list[str]) -> list[float]:
        return [float(v) for v in reranker.score_pairs(queries, texts)]

    return score


def score_tuples(
    rows: Sequence[NTuple], score: Callable[[list[str], list[str]], list[float]]
) -> list[list[float]]:
    """[positive, *negatives] scores of every tuple, in chunks, with a progress bar."""
    from rerank_sweeps.console import progress

    out: list[list[float]] = []
    with progress(total=len(rows), desc="teacher scores", unit="question") as bar:
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            queries = [t.question for t in chunk for _ in range(1 + len(t.negatives))]
            texts = [d for t in chunk for d in [t.positive, *t.negatives]]
            flat = score(queries, texts)
            offset = 0
            for t in chunk:
                n = 1 + len(t.negatives)
                out.append(flat[offset : offset + n])
                offset += n
            bar.update(len(chunk))
    return out


def _agreement(scores: Sequence[Sequence[float]]) -> dict[str, float | None]:
    """How far the teacher agrees with the labels: a teacher that does not put the positive
    first teaches the student to rank it lower."""
    if not scores:
        return {"positive_first": None, "mean_margin": None}
    first = [all(s[0] > x for x in s[1:]) for s in scores]
    margins = [s[0] - x for s in scores for x in s[1:]]
    return {
        "positive_first": round(sum(first) / len(first), 4),
        "mean_margin": round(sum(margins) / len(margins), 4) if margins else None,
    }


# ----------------------------------------------------------------------------- the stage


def teacher_scores_stage(
    conf: RunConfig,
    cache: Cache,
    split_art: Artifact,
    neg_art: Artifact,
    dev: DevArtifacts | None = None,
) -> Artifact:
    """The teacher's scores of every training tuple (scores.jsonl, stats.json), cached.

    Key: the negatives artifact and the teacher's identity (the miner's id, a model
    artifact's key, a directory's path and file fingerprint, or the trained teacher's model
    artifact, which is trained first through `train.model_stage` with the same `dev`).
    """
    from rerank_sweeps.data import load_negatives

    spec = parse_teacher(conf.arch.teacher)
    if spec is None:
        raise UserError(f"arch.loss={conf.arch.loss!r} needs arch.teacher")
    inputs: list[Artifact] = [neg_art]
    teacher_art = None
    if spec.kind == "trained":
        from rerank_sweeps.train import model_stage

        teacher_art = model_stage(teacher_run_config(conf, spec), cache, split_art, neg_art, dev)
        inputs.append(teacher_art)
    identity = teacher_identity(conf, spec, teacher_art)

    def build(out_dir: Path, work_dir: Path) -> None:
        del work_dir
        rows = load_negatives(neg_art).train
        started = time.perf_counter()
        if spec.kind == MINER:
            scorer = miner_scorer(conf)
        else:
            scorer = reranker_scorer(conf, spec, teacher_art)
        scores = score_tuples(rows, scorer)
        with (out_dir / "scores.jsonl").open("w", encoding="utf-8") as f:
            for t, s in zip(rows, scores, strict=True):
                f.write(json.dumps({"question": t.question, "scores": s}) + "\n")
        stats = {
            "teacher": identity,
            "spec": spec.describe(),
            "rows": len(rows),
            "seconds": round(time.perf_counter() - started, 3),
            **_agreement(scores),
        }
        (out_dir / "stats.json").write_text(json.dumps(stats, indent=2, default=str))
        log.info(
            "teacher scores: %d tuples by %s in %.1fs (positive first in %s of them)",
            len(rows),
            identity["kind"],
            stats["seconds"],
            stats["positive_first"],
        )

    return cache.stage("teacher_scores", TEACHER_SCORES_VERSION, identity, inputs, build)


def load_teacher_scores(art: Artifact | Path | str, rows: Sequence[NTuple]) -> TeacherScores:
    """The scores of a teacher scores artifact, checked against the tuples they belong to."""
    root = art.path if isinstance(art, Artifact) else Path(art)
    lines = (root / "scores.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    if len(records) != len(rows) or any(
        r["question"] != t.question or len(r["scores"]) != 1 + len(t.negatives)
        for r, t in zip(records, rows, strict=False)
    ):
        raise UserError(f"{root}: teacher scores do not match the training tuples")
    stats = json.loads((root / "stats.json").read_text())
    return TeacherScores([r["scores"] for r in records], stats.get("teacher", {}))


# ----------------------------------------------------------------------------- datasets


def _fixed_width(
    rows: Sequence[NTuple], scores: Sequence[Sequence[float]], what: str
) -> tuple[int, list[list[float]]]:
    """The fewest negatives of any row (every row must have as many texts for the losses'
    batching), and each row's scores cut to [positive, first n negatives]."""
    if len(scores) != len(rows):
        raise UserError(f"{what}: {len(scores)} teacher score rows for {len(rows)} tuples")
    n = min((len(t.negatives) for t in rows), default=0)
    if n == 0:
        raise UserError(f"{what} training needs at least one negative per training question")
    return n, [list(s[: 1 + n]) for s in scores]


def margin_mse_rows(
    rows: Sequence[NTuple], scores: Sequence[Sequence[float]], scale: float = 1.0
) -> dict[str, list]:
    """MarginMSELoss rows: query, positive, negative_1..n and `label`, the teacher's margins
    scale * (score(positive) - score(negative_i)) for i in 1..n."""
    n, cut = _fixed_width(rows, scores, "arch.loss=margin_mse")
    columns: dict[str, list] = {"query": [], "positive": []}
    for i in range(1, n + 1):
        columns[f"negative_{i}"] = []
    columns["label"] = []
    for t, s in zip(rows, cut, strict=True):
        columns["query"].append(t.question)
        columns["positive"].append(t.positive)
        for i in range(n):
            columns[f"negative_{i + 1}"].append(t.negatives[i])
        columns["label"].append([scale * (s[0] - x) for x in s[1:]])
    return columns


def mse_pairs(
    rows: Sequence[NTuple], scores: Sequence[Sequence[float]], scale: float = 1.0
) -> dict[str, list]:
    """MSELoss pairs: (query, passage) with `label` = scale * the teacher's score."""
    if len(scores) != len(rows):
        raise UserError(f"arch.loss=mse: {len(scores)} teacher score rows for {len(rows)} tuples")
    query, passage, label = [], [], []
    for t, s in zip(rows, scores, strict=True):
        for text, value in zip([t.positive, *t.negatives], s, strict=True):
            query.append(t.question)
            passage.append(text)
            label.append(scale * value)
    return {"query": query, "passage": passage, "label": label}


def distillation_rows(
    rows: Sequence[NTuple], scores: Sequence[Sequence[float]], scale: float = 1.0
) -> dict[str, list]:
    """PyLate Distillation rows: query, documents [positive, *negatives[:n]] and `scores`
    (scale * the teacher's scores of those documents, the KL target's logits)."""
    n, cut = _fixed_width(rows, scores, "arch.loss=distillation")
    return {
        "query": [t.question for t in rows],
        "documents": [[t.positive, *t.negatives[:n]] for t in rows],
        "scores": [[scale * x for x in s] for s in cut],
    }
