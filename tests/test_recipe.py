"""The recipe study: a dev objective (never eval) and its generated page."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import compose_config

from rerank_sweeps import recipe
from rerank_sweeps.config import ConfigError
from rerank_sweeps.pipeline import _objective_value
from rerank_sweeps.validation import validate


def test_dev_objective_is_validated_before_any_job() -> None:
    conf = validate(compose_config(["experiment=tiny", "objective=dev/ndcg@10"]))
    assert conf.objective == ["dev/ndcg@10"]
    assert validate(compose_config(["experiment=tiny", "objective=dev/hybrid_hit@5"]))
    with pytest.raises(ConfigError, match="not a dev metric"):
        validate(compose_config(["experiment=tiny", "objective=dev/ndcg@11"]))
    with pytest.raises(ConfigError, match="epochs=0"):
        validate(compose_config(["experiment=tiny", "objective=dev/ndcg@10", "epochs=0"]))


def test_dev_objective_reads_the_dev_metrics_not_the_eval_ones() -> None:
    metrics = {"hybrid/reranked/hit@5": 0.9}
    dev = {"ndcg@10": 0.31, "hybrid_hit@5": 0.4}
    assert _objective_value("dev/ndcg@10", metrics, {}, dev) == 0.31
    assert _objective_value("hybrid/reranked/hit@5", metrics, {}, dev) == 0.9
    assert str(_objective_value("dev/ndcg@10", metrics, {}, {})) == "nan"


def test_recipe_search_config_optimises_dev_only() -> None:
    conf = validate(compose_config(["experiment=recipe_search"]))
    assert conf.objective == ["dev/ndcg@10"]
    assert conf.data.source == "pydoc" and conf.arch.name == "colbert"


def _record(run_dir: Path, dev: float, eval_hit: float) -> None:
    run_dir.mkdir(parents=True)
    pair = {"diff": eval_hit - 0.3, "interval": [-0.05, 0.15], "p_value": 0.2, "n": 400}
    record = {
        "run_dir": str(run_dir),
        "objective_names": ["dev/ndcg@10"],
        "objective": [dev],
        "dev_gate": {"passed": dev > 0.5, "reranked": dev, "first_stage": 0.5},
        "metrics": {
            f"{qt}/{s}/hit@5": v
            for qt in ("vector", "hybrid")
            for s, v in (("baseline", 0.3), ("reranked", eval_hit), ("fused", eval_hit))
        },
        "paired": {
            f"{qt}/{s}-baseline/hit@5": pair
            for qt in ("vector", "hybrid")
            for s in ("reranked", "fused")
        },
    }
    (run_dir / "record.json").write_text(json.dumps(record))


def test_the_page_picks_the_best_trial_by_dev_even_when_another_evals_higher(tmp_path) -> None:
    storage = tmp_path / "study.db"
    study = optuna.create_study(
        study_name="recipe_search", storage=recipe.storage_url(str(storage)), direction="maximize"
    )
    for number, (dev, eval_hit) in enumerate([(0.52, 0.45), (0.58, 0.35)]):
        trial = study.ask({"arch.lr": optuna.distributions.FloatDistribution(1e-6, 1e-3, log=True)})
        assert trial.params["arch.lr"] > 0
        run_dir = tmp_path / "runs" / str(number)
        _record(run_dir, dev, eval_hit)
        trial.set_user_attr("run_dir", str(run_dir))
        study.tell(trial, dev)
    study.ask()  # a trial still running: listed, never best
    loaded, rows = recipe.load_trials(str(storage))
    assert [r["state"] for r in rows] == ["complete", "complete", "running"]
    page = recipe.render(loaded, rows)
    assert "## Best trial: 1" in page
    assert "Search space: `arch.lr` from 1e-06 to 0.001 (log scale)." in page
    assert "2 of 3 trials complete" in page
    assert "dev nDCG@10 0.580 vs 0.500 for the first stage (dev gate passed)" in page
    assert "eval hybrid hit@5: baseline 0.300; reranked 0.350 (+5.0 [-5.0, +15.0], p=0.2)" in page
    out = tmp_path / "recipe.md"
    assert recipe.main([str(storage), "--publish", str(out)]) == 0
    assert out.read_text() == recipe.render(loaded, rows, storage=str(storage))
    assert recipe.main([str(tmp_path / "missing.db")]) == 2
