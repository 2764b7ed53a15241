"""`python -m rerank_sweeps [overrides]`: the Hydra app.

Before Hydra runs, every job's config is composed and validated once here, so a typo in a
config value ends the command with one readable line (exit code 2) instead of a traceback,
and a sweep never starts half its jobs before finding the bad one.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rerank_sweeps.config import ConfigError, UserError, mask_secrets
from rerank_sweeps.tracking import AnotherCommandsRun
from rerank_sweeps.validation import validate

log = logging.getLogger("rerank_sweeps")

CONF_MODULE = "rerank_sweeps.conf"
# Flags after which we let Hydra speak for itself (help, --cfg job, shell completion...).
_PLAIN_FLAGS = {"-m", "--multirun"}
_MAX_PREFLIGHT_JOBS = 256


def _group_options(group: str) -> list[str] | None:
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    if not loader.repository.group_exists(group):
        return None
    return sorted(loader.get_group_options(group))


def _options_setting(key: str) -> list[str]:
    """The options of `key`'s config group whose YAML has it (`arch.pos_weight` -> [ce]);
    [] outside a composition or for a key not directly in a group's option."""
    from hydra.core.global_hydra import GlobalHydra

    group, _, leaf = key.lstrip("+~").rpartition(".")
    if not group or not GlobalHydra.instance().is_initialized():
        return []
    repository = GlobalHydra.instance().config_loader().repository
    found = []
    for option in _group_options(group) or []:
        loaded = repository.load_config(f"{group}/{option}")
        if loaded is not None and loaded.config is not None and leaf in loaded.config:
            found.append(option)
    return found


def _expand(overrides: Sequence[str]) -> list[list[str]]:
    """The jobs a basic sweep of `overrides` would run, as lists of plain overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    axes: list[list[str]] = []
    for ov in parsed:
        key = ov.get_key_element()
        if ov.is_sweep_override():
            if ov.is_discrete_sweep():
                axes.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
            # interval(...) and other sweeper-only syntax: validated per trial by the job
        else:
            axes.append([ov.input_line])
    jobs = [list(combo) for combo in itertools.product(*axes)] if axes else [[]]
    return jobs[:_MAX_PREFLIGHT_JOBS]


def _check_groups(overrides: Sequence[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for ov in OverridesParser.create().parse_overrides(list(overrides)):
        group = ov.key_or_group
        if "hydra" in group or ov.is_delete():
            continue
        options = _group_options(group)
        if options is None:
            continue
        values = list(ov.sweep_string_iterator()) if ov.is_discrete_sweep() else [ov.value()]
        if ov.is_sweep_override() and not ov.is_discrete_sweep():
            continue
        for value in values:
            if str(value) not in options:
                raise ConfigError(
                    f"{group}={value!r} is not an option: choose one of {', '.join(options)}"
                )


def _compose_error(err: BaseException) -> str:
    chain, current = [], err
    while current is not None:
        chain.append(str(current))
        current = current.__cause__
    full = " ".join(" ".join(chain).split())
    text = " ".join(str(err).split())
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown and ("not in struct" in full or "not in '" in full):
        key = unknown.group(1)
        from rerank_sweeps.config import did_you_mean

        owners = _options_setting(key)
        if owners:  # a key of the group's other options, e.g. a cross-encoder-only setting
            group = key.lstrip("+~").rpartition(".")[0]
            choices = " or ".join(f"{group}={o}" for o in owners)
            return f"{key}: not a setting of this {group}; only {choices} reads it"
        hint = did_you_mean(key.lstrip("+~"))
        return f"{key}: unknown key{hint or f' (to add a new key write +{key}=...)'}"
    text = text.replace(
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", ""
    )
    return text.strip() or type(err).__name__


def _check_sweep_dir(overrides: list[str]) -> None:
    """Refuse a sweep dir holding another command's finished jobs (`sweep.refuse_another_sweep`)."""
    from hydra import compose
    from omegaconf import OmegaConf

    from rerank_sweeps.sweep import refuse_another_sweep

    first = _expand(overrides)[0]
    cfg = compose("config", overrides=first, return_hydra_config=True)
    sweep_dir = OmegaConf.select(cfg, "hydra.sweep.dir")
    if sweep_dir:
        node = OmegaConf.select(cfg, "hydra.sweeper.params")
        params = OmegaConf.to_container(node) if node else {}
        refuse_another_sweep(Path(sweep_dir), params, overrides)


def preflight(argv: Sequence[str]) -> str | None:
    """Compose and validate every job of this command line; the one-line error, or None."""
    flags = [a for a in argv if a.startswith("-")]
    if any(f not in _PLAIN_FLAGS for f in flags):
        return None
    overrides = [a for a in argv if not a.startswith("-")]
    from hydra import compose, initialize_config_module

    try:
        with initialize_config_module(CONF_MODULE, version_base="1.3"):
            _check_groups(overrides)
            for job in _expand(overrides):
                try:
                    cfg = compose("config", overrides=job)
                except Exception as err:  # Hydra's composition errors are many types
                    raise ConfigError(_compose_error(err)) from None
                validate(cfg)
            if any(f in _PLAIN_FLAGS for f in flags):
                _check_sweep_dir(overrides)
    except ConfigError as err:
        return str(err)
    except AnotherCommandsRun as err:
        return str(err)
    except Exception as err:  # a grammar error in an override, for instance
        return _compose_error(err)
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig) -> float | tuple[float, ...]:
    """One Hydra job: run the pipeline, return the objective (a tuple when multi-objective).

    In a sweep a failing job is recorded as failed (record.json) and returns NaN, so the other
    jobs go on; the sweep's summary callback then exits non-zero. A single run fails loudly.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rerank_sweeps import console
    from rerank_sweeps.pipeline import run

    console.quiet_libraries()
    conf = validate(cfg)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        result = run(cfg, conf=conf)
    except (ConfigError, UserError) as err:
        log.error("%s", err)
        if multirun and not isinstance(err, AnotherCommandsRun):
            return _failed_objective(len(conf.objective))
        print(f"error: {mask_secrets(str(err))}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:
        if _is_pruned(err):
            raise  # the Optuna sweeper records the trial PRUNED
        if multirun:
            log.exception("job failed")
            return _failed_objective(len(conf.objective))
        raise
    # The run's closing summary (pipeline.run) has printed the objective and the run dir.
    return result.objective[0] if len(result.objective) == 1 else tuple(result.objective)


def _is_pruned(err: BaseException) -> bool:
    import optuna

    return isinstance(err, optuna.TrialPruned)


def _failed_objective(n: int) -> float | tuple[float, ...]:
    return float("nan") if n == 1 else tuple([float("nan")] * n)


def main() -> None:
    """Console entry point."""
    from rerank_sweeps import console

    sys.argv[1:] = console.take_verbose_flag(sys.argv[1:])
    if any(a.startswith("hydra.verbose=") and a != "hydra.verbose=false" for a in sys.argv[1:]):
        os.environ[console.VERBOSE_ENV] = "1"
    console.prepare_environment()
    error = preflight(sys.argv[1:])
    if error is not None:
        print(f"error: {mask_secrets(error)}", file=sys.stderr)
        raise SystemExit(2)
    hydra_main()


if __name__ == "__main__":
    main()
