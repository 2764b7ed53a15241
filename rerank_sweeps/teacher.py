"""`arch.teacher`: which teacher a distillation loss learns from, parsed and checked at
config time.

A teacher is written in one of three forms:

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

Its scores are stored by `distill.teacher_scores_stage`. The config-time checks of a teacher
(`validation.check_teacher`) use `parse_teacher` and `teacher_run_config` below.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rerank_sweeps.config import (
    ArchConfig,
    ConfigError,
    RunConfig,
    UserError,
    to_run_config,
)

MINER = "miner"
CONF = Path(__file__).resolve().parent / "conf"
# Keys of a trained-teacher mapping that are not ArchConfig fields.
_RUN_KEYS = ("arch", "base", "epochs", "init")
# ArchConfig fields that a teacher mapping may not set: `name` is its `arch` key.
_NOT_SETTABLE = ("name",)


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
        from rerank_sweeps.archs import read_reranker_meta

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


@contextmanager
def teacher_errors() -> Iterator[None]:
    """Re-raise a ConfigError of a teacher's RunConfig as one naming `arch.teacher`: the
    teacher's own arch keys are the mapping's keys, named as the user wrote them."""
    try:
        yield
    except ConfigError as err:
        message = str(err)
        if message.startswith("arch."):
            raise ConfigError("arch.teacher." + message[len("arch.") :]) from None
        raise ConfigError(f"arch.teacher: {message}") from None


def teacher_run_config(conf: RunConfig, spec: TeacherSpec | None = None) -> RunConfig:
    """The RunConfig that trains a `trained` teacher: the student's, with the teacher's arch,
    base, epochs and init (see the module docstring), with the schemas' own checks (the
    registry checks are `validation.check_teacher`'s). Errors name `arch.teacher`."""
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
    with teacher_errors():
        return to_run_config(OmegaConf.create(raw))
