"""The config tree composes, and every user error is one readable line, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rerank_sweeps.config import ConfigError, mask_secrets
from rerank_sweeps.validation import validate
from tests.conftest import REPO, compose_config

CONF = REPO / "rerank_sweeps" / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["data", "arch", "base", "query_type", "logger", "experiment"])
def test_every_option_of_every_group_composes_and_validates(group: str) -> None:
    for option in _options(group):
        overrides = [f"{group}={option}"]
        if option == "local":
            overrides.append("data.path=some.jsonl")
        conf = validate(compose_config(overrides))
        if group in ("data", "arch", "base", "query_type", "logger"):
            assert getattr(conf, group).__class__.__name__.endswith("Config")
        if group == "experiment":
            assert conf.experiment == option


def test_scalar_top_k_becomes_a_list_and_defaults_match_the_blog_protocol() -> None:
    conf = validate(compose_config(["top_k=5"]))
    assert conf.top_k == [5]
    default = validate(compose_config([]))
    assert default.top_k == [5, 10] and default.overfetch == 4
    assert default.query_type.types == ["vector", "fts", "hybrid"]


def test_tiny_experiment_overrides_base_and_sizes() -> None:
    conf = validate(compose_config(["experiment=tiny"]))
    assert conf.base.model_id == "tiny-random/bert"
    assert conf.data.num_eval < 100 and conf.logger.name == "none"


def test_model_for_init_pretrained_must_exist() -> None:
    with pytest.raises(ConfigError, match="names no pretrained"):
        validate(compose_config(["init=pretrained", "base=mpnet"]))


def test_secrets_are_masked_in_urls_and_keys() -> None:
    masked = mask_secrets(
        {"storage": "postgresql://alice:s3cret@db:5432/optuna", "wandb": {"api_key": "abc"}}
    )
    assert masked == {
        "storage": "postgresql://alice:***@db:5432/optuna",
        "wandb": {"api_key": "***"},
    }


BAD_INPUTS = [
    (["arch=nope"], "arch='nope' is not an option: choose one of ce, colbert"),
    (["epochs=-1"], "epochs=-1 is not allowed"),
    (["top_k=0"], "top_k=0 is not allowed"),
    (["overfetch=0.5"], "overfetch=0.5 is not allowed: expected integer"),
    (["epochs=abc"], "epochs=abc is not allowed: expected integer"),
    (["data=local"], "data.path"),
    (["nokey=1"], "nokey: unknown key"),
    (["negative=2"], "negative: unknown key (did you mean negatives?)"),
    (["+arch.lrr=2"], "arch.lrr: unknown key (did you mean arch.lr?)"),
    (["mining.sorce=model"], "mining.sorce: unknown key (did you mean mining.source?)"),
    (
        ["arch=colbert", "arch.score_in_input=true"],
        "arch.score_in_input: not a setting of this arch; only arch=ce reads it",
    ),
    (
        ["arch=colbert", "+arch.score_in_input=true"],
        "arch.score_in_input=True is not allowed: false for arch=colbert",
    ),
    (["objective=[hybrid/reranked/hit@50]"], "k=50 is not in top_k=[5, 10]"),
    (["-m", "arch=ce,nope"], "arch='nope' is not an option"),
    (["-m", "base=minilm", "negatives=1,0"], "negatives=0 is not allowed"),
    (["query_type=semantic"], "query_type='semantic' is not an option"),
    (["mining.sampling_strategy=best"], "mining.sampling_strategy='best' is not allowed"),
    (
        ["hydra.sweeper.storage=postgresql://u:hunter2@h/db"],
        "hydra.sweeper.storage: unknown key",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_nonzero_with_one_line(
    argv: list[str], expected: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rerank_sweeps", *argv, f"paths.root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
    assert "hunter2" not in proc.stderr + proc.stdout
    assert not list(tmp_path.rglob("*.json")), "a rejected command must not start a run"


def test_objective_accepts_metric_and_latency_keys_only() -> None:
    keys = "objective=[hybrid/reranked/hit@5,cpu/ce/20/p50_ms]"
    conf = validate(compose_config([keys, "arch=ce"]))
    assert conf.objective == ["hybrid/reranked/hit@5", "cpu/ce/20/p50_ms"]
    with pytest.raises(ConfigError, match="objective='hit5'"):
        validate(compose_config(["objective=hit5"]))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["objective=[hybrid/reranked/hit@50]", "top_k=[5,10]"], "k=50 is not in top_k=[5, 10]"),
        (["objective=[hybrid/rerankd/hit@5]"], "system 'rerankd' is not evaluated"),
        (["objective=[fts/reranked/hit@5]", "query_type=vector"], "query type 'fts'"),
        (["objective=[hybrid/fused/hit@5]", "rerank.fusion=none"], "system 'fused'"),
        (["objective=[hybrid/untrained/hit@5]", "epochs=0"], "system 'untrained'"),
        (["objective=[hybrid/reranked/map@5]"], "metric 'map'"),
        (["objective=[cpu/ce/20/p50_ms]", "arch=colbert"], "latency system 'ce'"),
        (["objective=[cpu/colbert/30/p50_ms]", "arch=colbert"], "30 candidates"),
        (["objective=[cpu/colbert/20/p50_ms]", "latency.enabled=false"], "latency.enabled"),
        (["objective=[cpu/colbert/20/p42_ms]", "arch=colbert"], "statistic 'p42_ms'"),
    ],
)
def test_an_objective_that_names_nothing_measured_fails_before_any_job(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_miner_that_is_the_model_being_trained_is_refused_in_one_line() -> None:
    overrides = ["base=mpnet", "mining.source=model"]
    overrides.append("mining.model_id=sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides))
    message = str(err.value)
    assert "\n" not in message and "is the model being trained (base=mpnet)" in message
    assert "mining.source=retriever" in message
    # The first stage's embedder mines for any base: it is the retriever, by design.
    retriever = validate(compose_config(["base=minilm", "mining.source=retriever"]))
    assert retriever.mining.source == "retriever"
    independent = validate(compose_config(["base=minilm", "mining.source=model"]))
    assert independent.mining.model_id.endswith("all-mpnet-base-v2")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("rerank.fusion=mean", "rerank.fusion"),
        ("dev.depth=0", "dev.depth"),
        ("dev.query_types=[vector,sparse]", "dev.query_types"),
        ("mining.random_share=1.5", "mining.random_share"),
        ("mining.source=index", "mining.source"),
    ],
)
def test_new_options_fail_in_one_line(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose_config([override]))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_schema_defaults_are_the_packaged_yaml_defaults():
    """Defaults are written in the YAML and in the dataclasses (for code that builds a
    RunConfig directly); they must not drift apart. `arch.loss` null means the same as the
    YAML's bce; a base's pretrained rerankers belong to that base alone."""
    from dataclasses import MISSING, fields, is_dataclass

    from omegaconf import OmegaConf

    from rerank_sweeps import config as schema

    def defaults(cls: type) -> dict:
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
        return out

    def drift(node: dict, cls: type, prefix: str) -> list[str]:
        found, known = [], defaults(cls)
        for key, value in node.items():
            ours = known.get(key, MISSING)
            if isinstance(value, dict) and is_dataclass(ours):
                found += drift(value, type(ours), f"{prefix}{key}.")
                continue
            ours = list(ours) if isinstance(ours, tuple) else ours
            if value != ours and str(value).lower() != str(ours).lower():
                found.append(f"{prefix}{key}: yaml {value!r}, dataclass {ours!r}")
        return found

    conf = REPO / "rerank_sweeps" / "conf"
    top = OmegaConf.to_container(OmegaConf.load(conf / "config.yaml"))
    for key in ("defaults", "hydra"):
        top.pop(key, None)
    found = drift(top, schema.RunConfig, "")
    ce = OmegaConf.to_container(OmegaConf.load(conf / "arch" / "ce.yaml"))
    found += drift({k: v for k, v in ce.items() if k != "loss"}, schema.ArchConfig, "arch.")
    wordnet = OmegaConf.to_container(OmegaConf.load(conf / "data" / "wordnet.yaml"))
    found += drift(wordnet, schema.DataConfig, "data.")
    assert found == []
