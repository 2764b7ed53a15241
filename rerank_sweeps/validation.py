"""`validate(cfg)`: a composed Hydra config to a checked `RunConfig`, the one entry point.

`config.to_run_config` types the tree and runs every schema's own checks; the checks here need
the registries above the configuration: the data sources (`data.source`, `data.path`), the
architectures (`arch.name`, `arch.loss`, `init=pretrained`), the speed-ups and their backends
(`latency.optimizations`) and the teacher (`arch.teacher`; a teacher trained in the same job
gets every check of a run's config). Errors are one-line `ConfigError`s, worded as
`config.py`'s own, raised before any job starts: `__main__`'s preflight validates every job of
a command, and each job validates its own config once.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rerank_sweeps.archs import arch_names, get_arch
from rerank_sweeps.backends import missing_packages
from rerank_sweeps.config import ConfigError, RunConfig, _check, _choice, to_run_config
from rerank_sweeps.data import check_source
from rerank_sweeps.speedups import Optimization, parse_optimization
from rerank_sweeps.teacher import (
    MINER,
    loss_uses_teacher,
    parse_teacher,
    teacher_errors,
    teacher_run_config,
)


def validate(cfg: DictConfig) -> RunConfig:
    """Turn a composed Hydra config into a typed, checked `RunConfig`, or raise a one-line
    ConfigError."""
    conf = to_run_config(cfg)
    check_run(conf)
    return conf


def check_run(conf: RunConfig) -> None:
    """The checks of a typed RunConfig that need a registry (`to_run_config` ran the rest)."""
    check_source(conf.data)
    _choice("arch.name", conf.arch.name, arch_names())
    # Names (and a backend's packages) are checked here, not after hours of training.
    for name in conf.latency.optimizations:
        (check_optimization if conf.latency.enabled else parse_optimization)(name)
    arch = get_arch(conf.arch.name)
    if conf.arch.loss is not None:
        _check(
            conf.arch.loss in arch.losses,
            "arch.loss",
            conf.arch.loss,
            f"for arch={conf.arch.name} choose one of {', '.join(arch.losses)}",
        )
    check_teacher(conf)
    _check(
        not conf.arch.score_in_input or "score_in_input" in arch.own_fields,
        "arch.score_in_input",
        conf.arch.score_in_input,
        f"false for arch={conf.arch.name}: only a cross-encoder reads the first-stage score "
        "with the passage (ColBERT encodes a document without its query)",
    )
    if conf.init == "pretrained":
        field = arch.pretrained_field
        pretrained = getattr(conf.base, field) if field else None
        _check(
            bool(pretrained),
            "init",
            conf.init,
            f"base={conf.base.name} names no pretrained {conf.arch.name} reranker",
        )


def check_optimization(name: str) -> Optimization:
    """`speedups.parse_optimization`, plus a one-line ConfigError when a backend's packages are
    missing (before anything trains)."""
    opt = parse_optimization(name)
    if opt.backend is not None:
        missing = missing_packages(opt.backend)
        if missing:
            raise ConfigError(
                f"latency.optimizations={name!r} needs {', '.join(missing)}: "
                "pip install -e '.[backends]' (make setup installs them)"
            )
    return opt


def _training_identity(conf: RunConfig) -> dict[str, Any]:
    """What makes a trained model this one, whichever loss or teacher it learnt from."""
    arch = asdict(conf.arch)
    for name in ("loss", "teacher", "teacher_scale", "checkpoint_minutes"):
        arch.pop(name, None)
    return {"arch": arch, "base": asdict(conf.base), "init": conf.init, "epochs": conf.epochs}


def check_teacher(conf: RunConfig) -> None:
    """Config-time checks of `arch.teacher`: a one-line ConfigError for a teacher loss without
    a teacher, a malformed teacher, an invalid, untrained teacher, or a teacher that is the
    model being trained (a cycle)."""
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
    with teacher_errors():
        check_run(teacher)
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
