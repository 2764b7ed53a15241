"""The console a user reads: a line budget, no library chatter, a closing summary that says where
the model is (and the model loads in LanceDB), our --help, and the user's own conf/ folder."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config

from rerank_sweeps import console
from rerank_sweeps.archs import get_arch
from rerank_sweeps.validation import validate

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
ENV.pop(console.VERBOSE_ENV, None)
LINE_BUDGET = 60


def _app(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "rerank_sweeps", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        env=env or ENV,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """One tiny run with every stage (latency too), its output piped as in `make run | tee`."""
    root = tmp_path_factory.mktemp("console")
    proc = _app("experiment=tiny", "logger=none", f"paths.root={root}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, proc


def test_a_piped_run_stays_within_its_line_budget_without_library_noise(tiny_run) -> None:
    _, proc = tiny_run
    out = proc.stdout + proc.stderr
    lines = out.splitlines()
    assert len(lines) <= LINE_BUDGET, out
    assert "LOAD REPORT" not in out and "UNEXPECTED" not in out
    assert "\x1b[" not in out  # no ANSI escapes when the output is not a terminal
    assert "\r" not in out  # no progress bars redrawn into a pipe
    assert "{'loss'" not in out  # no trainer log dicts
    assert "sentence_transformers" not in out and "Load pretrained" not in out
    # Tables and the summary fit 100 columns; only log lines that quote paths may be longer.
    summary = out[out.index("── done in") :].splitlines()
    assert all(len(line) <= 100 for line in summary if not line.startswith(("model", "──"))), (
        summary
    )


def test_the_closing_summary_names_a_model_dir_that_lancedb_loads(tiny_run) -> None:
    import pyarrow as pa
    from lancedb.rerankers import CrossEncoderReranker

    root, proc = tiny_run
    summary = proc.stdout[proc.stdout.index("── done in") :]
    assert "objective  hybrid/reranked/hit@5 = " in summary
    assert "dev gate" in summary and "hit@5" in summary and "baseline" in summary
    model_line = next(line for line in summary.splitlines() if line.startswith("model "))
    model_dir = Path(model_line.split()[1])
    run_dir = model_dir.parent
    assert run_dir.parent == root / "runs"
    assert (model_dir / "README.md").is_file()  # the library's model card travels with it
    record = __import__("json").loads((run_dir / "record.json").read_text())
    assert Path(record["model_dir"]) == model_dir
    assert (run_dir / "run.log").is_file()
    reranker = CrossEncoderReranker(model_name=str(model_dir), device="cpu")
    docs = pa.table(
        {"text": ["a small dog", "a tax form", "a puppy"], "_distance": [0.1, 0.2, 0.3]}
    )
    ranked = reranker.rerank_vector("young dog", docs)
    assert ranked.num_rows == 3 and "_relevance_score" in ranked.column_names


def test_console_formatter_is_short_and_names_warnings() -> None:
    formatter = console.ConsoleFormatter()
    info = logging.LogRecord("rerank_sweeps.x", logging.INFO, __file__, 1, "built %s", ("x",), None)
    warn = logging.LogRecord("lib", logging.WARNING, __file__, 1, "careful", (), None)
    assert formatter.format(info).split(" ", 1)[1] == "built x"
    assert formatter.format(warn).split(" ", 1)[1] == "WARNING: careful"
    assert len(formatter.format(info).split(" ", 1)[0]) == len("04:48:26")


def test_verbose_flag_is_taken_out_of_argv_and_remembered(monkeypatch) -> None:
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    assert console.take_verbose_flag(["epochs=2"]) == ["epochs=2"] and not console.verbose()
    assert console.take_verbose_flag(["-v", "epochs=2"]) == ["epochs=2"] and console.verbose()


def test_progress_bars_are_not_drawn_into_a_pipe(monkeypatch) -> None:
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(console, "is_terminal", lambda: False)
    assert console.progress(range(3)).disable
    monkeypatch.setattr(console, "is_terminal", lambda: True)
    bar = console.progress(range(3))
    assert not bar.disable and not bar.leave
    bar.close()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert console.progress(range(3)).disable


def _record() -> dict:
    paired = {
        f"{qt}/{s}-baseline/hit@5": {
            "diff": d,
            "interval": [d - 0.04, d + 0.04],
            "p_value": p,
            "n": 400,
        }
        for qt, s, d, p in [
            ("vector", "reranked", 0.05, 0.0105),
            ("vector", "fused", 0.062, 0.0004),
            ("hybrid", "reranked", 0.102, 7.5e-06),
            ("hybrid", "fused", 0.102, 7.5e-06),
        ]
    }
    metrics = {
        "vector/baseline/hit@5": 0.325,
        "vector/reranked/hit@5": 0.375,
        "vector/fused/hit@5": 0.387,
        "hybrid/baseline/hit@5": 0.273,
        "hybrid/reranked/hit@5": 0.375,
        "hybrid/fused/hit@5": 0.375,
    }
    return {
        "run_dir": "/o/runs/1",
        "stage_seconds": {"model": 300.0, "evaluate": 61.5},
        "objective_names": ["hybrid/reranked/hit@5"],
        "objective": [0.375],
        "metrics": metrics,
        "paired": paired,
        "dev_gate": {"passed": True, "reranked": 0.346, "first_stage": 0.271},
        "model_dir": "/o/runs/1/model",
    }


def test_closing_summary_reads_the_headline_comparison_right() -> None:

    conf = validate(compose_config(["query_type=all", "query_type.types=[vector,hybrid]"]))
    text = console.closing_summary(_record(), conf, get_arch(conf.arch.name).loader)
    lines = text.splitlines()
    assert lines[0] == "── done in 6m01s · /o/runs/1"
    assert "objective  hybrid/reranked/hit@5 = 0.3750" in lines
    vector = next(line for line in lines if line.strip().startswith("vector"))
    assert "0.325" in vector and "0.375 +5.0 [+1.0,+9.0] p=0.011" in vector
    assert "0.387 +6.2 [+2.2,+10.2] p<0.001" in vector
    assert "dev gate   passed: dev ndcg@10 0.346 vs first stage 0.271" in lines
    assert "model      /o/runs/1/model  (pylate.models.ColBERT(path))" in lines
    assert all(len(line) <= 100 for line in lines)


def test_latency_summary_has_one_line_per_system() -> None:
    flat = {
        "cpu/none/20/p50_ms": 12.0,
        "cpu/none/50/p50_ms": 13.0,
        "cpu/colbert/20/p50_ms": 130.25,
        "cpu/colbert/20/rerank_p50_ms": 117.5,
        "cpu/colbert/50/p50_ms": 300.0,
        "cpu/colbert/eval/vector-hit@5": 0.4,
    }
    lines = console.latency_summary(flat).splitlines()
    assert lines[0].startswith("latency cpu")
    assert lines[1].split() == ["none", "N=20", "12.0", "N=50", "13.0"]
    assert lines[2].split()[:4] == ["colbert", "N=20", "130.2", "(117.5)"]


def test_help_is_ours(tmp_path) -> None:
    proc = _app("--help")
    assert proc.returncode == 0
    assert "powered by Hydra" not in proc.stdout
    assert "arch: ce, colbert" in proc.stdout
    assert "python -m rerank_sweeps.report" in proc.stdout


def test_a_config_in_the_users_conf_folder_is_an_option(tmp_path) -> None:
    experiment = tmp_path / "conf" / "experiment"
    experiment.mkdir(parents=True)
    (experiment / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - tiny\n  - _self_\nexperiment: mine\nepochs: 3\n"
    )
    (tmp_path / "conf" / "config.yaml").write_text("unrelated: true\n")  # never our primary
    proc = _app("experiment=mine", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epochs: 3" in proc.stdout and "experiment: mine" in proc.stdout
    assert "unrelated" not in proc.stdout
    bad = _app("experiment=mien", "epochs=1", cwd=tmp_path)
    assert bad.returncode == 2
    assert "choose one of" in bad.stderr and "mine" in bad.stderr.split("choose one of")[1]


def test_the_shipped_example_configs_compose_and_validate(monkeypatch) -> None:

    monkeypatch.chdir(REPO)
    quick = validate(compose_config(["experiment=quick"]))
    assert quick.data.num_train == 600 and not quick.latency.enabled
    monkeypatch.setenv("MY_QA_FILE", "/nowhere/pairs.jsonl")
    assert compose_config(["data=my_qa"]).data.path == "/nowhere/pairs.jsonl"


def test_training_in_a_pipe_says_its_progress_at_each_quarter(monkeypatch, caplog) -> None:
    from types import SimpleNamespace

    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    monkeypatch.setattr(console, "is_terminal", lambda: False)
    callback = console.progress_callback()
    state = SimpleNamespace(is_world_process_zero=True, max_steps=8, global_step=0)
    with caplog.at_level(logging.INFO, logger="rerank_sweeps.train"):
        callback.on_train_begin(None, state, None)
        for step in range(1, 9):
            state.global_step = step
            callback.on_step_end(None, state, None)
        callback.on_log(None, state, None, logs={"loss": 0.5, "eval_dev_ndcg@10": 0.41})
        callback.on_train_end(None, state, None)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(",")[0] for line in lines[:3]] == [
        "train: step 2/8",
        "train: step 4/8",
        "train: step 6/8",
    ]
    assert lines[3] == "step 8/8: dev_ndcg@10 0.4100" and len(lines) == 4
