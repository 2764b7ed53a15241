"""Our Optuna sweeper (hydra_plugins/rerank_sweeps_optuna): grammar, resume, failures, workers.

Sweeps run the toy app tests/apps/quadratic.py in subprocesses, exactly as a user would:
`python tests/apps/quadratic.py -m hydra/sweeper=optuna ...`. Its value is
(x - 1)^2 + (y + 2)^2, and each job writes result.json into its run dir.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.rerank_sweeps_optuna import report
from hydra_plugins.rerank_sweeps_optuna._impl import (
    consecutive_runs,
    derive_seed,
    objective_values,
    storage_url_with_driver,
)
from hydra_plugins.rerank_sweeps_optuna._space import (
    format_override,
    grid_values,
    parse_search_space,
)
from hydra_plugins.rerank_sweeps_optuna._workers import (
    _proc_stat,
    local_worker_is_dead,
    machine_id,
)
from rerank_sweeps.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "tests" / "apps" / "quadratic.py"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _command(root: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(APP),
        "-m",
        "hydra/sweeper=optuna",
        f"paths.root={root}",
        *overrides,
    ]


def sweep(root: Path, *overrides: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run one sweep of the toy app to its end."""
    return subprocess.run(
        _command(root, *overrides), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def sweeps(*runs: tuple[Path, list[str]]) -> list[subprocess.CompletedProcess]:
    """Run independent sweeps side by side (the suite's time is mostly process start-up)."""
    procs = [
        subprocess.Popen(
            _command(root, *overrides),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for root, overrides in runs
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def load_study(root: Path) -> optuna.Study:
    """The one study in the default storage under `root` (root/optuna/<study>.db)."""
    (db,) = (root / "optuna").glob("*.db")
    return optuna.load_study(study_name=None, storage=f"sqlite:///{db}")


def by_number(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in study.get_trials()}


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


# -- in-process: plugin registration, grammar, helpers -------------------------------------


def test_plugin_is_discovered_and_its_configs_registered() -> None:
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)]
    assert "hydra_plugins.rerank_sweeps_optuna.optuna_sweeper.OptunaSweeper" in names
    repo = ConfigStore.instance().repo["hydra"]
    assert "optuna.yaml" in repo["sweeper"]
    assert {"tpe.yaml", "random.yaml", "grid.yaml"} <= set(repo["sweeper"]["sampler"])
    assert {"nop.yaml", "median.yaml", "threshold.yaml"} <= set(repo["sweeper"]["pruner"])


GRAMMAR = [
    ("x=choice(1,2.5,abc,true)", CategoricalDistribution([1, 2.5, "abc", True])),
    ("x=1,2,3", CategoricalDistribution([1, 2, 3])),
    ("x=str(choice(1,2))", CategoricalDistribution(["1", "2"])),
    (
        "x=choice('a b','c,d',\"it's\",'null')",
        CategoricalDistribution(["a b", "c,d", "it's", "null"]),
    ),
    ("x=shuffle(range(3))", CategoricalDistribution([0, 1, 2])),
    ("x=range(1,10,3)", IntDistribution(1, 7, step=3)),  # stop is exclusive, as in Python
    ("x=range(0,1,0.25)", FloatDistribution(0.0, 0.75, step=0.25)),
    ("x=interval(0,1)", FloatDistribution(0.0, 1.0)),
    ("x=interval(1,10)", FloatDistribution(1.0, 10.0)),  # Hydra makes interval bounds floats
    ("x=int(interval(1,10))", IntDistribution(1, 10)),
    ("x=tag(log,interval(1e-5,1e-1))", FloatDistribution(1e-5, 0.1, log=True)),
    ("x=tag(log,int(interval(1,100)))", IntDistribution(1, 100, log=True)),
]


def _proposals(dist) -> list:
    """Values Optuna itself proposes from `dist` (20 random draws, plus the bounds)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [study.ask({"x": dist}).params["x"] for _ in range(20)]
    if not isinstance(dist, CategoricalDistribution):
        values += [dist.low, dist.high]
    return values


@pytest.mark.parametrize(("line", "expected"), GRAMMAR, ids=[g[0] for g in GRAMMAR])
def test_grammar_round_trip(line: str, expected) -> None:
    space, fixed = parse_search_space([line])
    assert fixed == []
    assert space == {"x": expected}
    dist = space["x"]
    parser = OverridesParser.create()
    override = parser.parse_override(line)
    if override.is_discrete_sweep():
        hydra_values = list(override.sweep_iterator())
        # Every value Hydra's grid would run is in the distribution, and the grid sampler
        # runs exactly those.
        assert sorted(map(repr, grid_values("x", dist))) == sorted(map(repr, hydra_values))
    for value in _proposals(dist):
        text = format_override("x", value)
        back = parser.parse_override(text).value()
        assert type(back) is type(value) and back == value, (text, back, value)


def test_fixed_overrides_and_the_last_definition_wins() -> None:
    space, fixed = parse_search_space(
        ["x=interval(0,1)", "y=choice(a,b)", "x=0.5", "+z=3", "y=choice(c,d)", "~w"]
    )
    assert space == {"y": CategoricalDistribution(["c", "d"])}
    assert fixed == ["x=0.5", "+z=3", "~w"]


@pytest.mark.parametrize(
    "line",
    ["x=choice([1,2],[3])", "x=tag(log,interval(0,1))", "x=choice(a,a)", "x=interval(2,1)"],
)
def test_unsupported_sweeps_are_config_errors(line: str) -> None:
    with pytest.raises(ConfigError, match="x"):
        parse_search_space([line])


def test_grid_needs_discrete_values() -> None:
    assert grid_values("x", IntDistribution(2, 8, step=3)) == [2, 5, 8]
    assert grid_values("x", FloatDistribution(0.0, 0.3, step=0.1)) == [0.0, 0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match="grid sampler needs discrete"):
        grid_values("x", FloatDistribution(0.0, 1.0))


def test_strings_that_need_quotes_round_trip() -> None:
    parser = OverridesParser.create()
    for value in ["1", "true", "null", "a b", "a,b", "it's", "back\\slash\\", "x=y", "", "1e-5"]:
        text = format_override("k", value)
        assert parser.parse_override(text).value() == value, text


def test_helpers() -> None:
    assert consecutive_runs([7, 3, 4, 9, 10]) == [[3, 4], [7], [9, 10]]
    seeds = [derive_seed(42, i) for i in range(5)]
    assert len(set(seeds)) == 5 and seeds == [derive_seed(42, i) for i in range(5)]
    assert derive_seed(None, 3) is None
    assert objective_values(0.5, 1) == ([0.5], None)
    assert objective_values(np.float32(0.5), 1) == ([0.5], None)
    assert objective_values((0.9, 12.0), 2) == ([0.9, 12.0], None)
    assert objective_values(math.nan, 1)[1] == "the job returned nan"
    assert "None" in objective_values(None, 1)[1]
    assert "not a number" in objective_values(True, 1)[1]
    assert "2 values for 1 objectives" in objective_values((1.0, 2.0), 1)[1]
    report(0, 1.0)  # outside a sweep: a no-op, not an error


def test_dead_local_workers_are_recognised() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        info = {
            "host": "h",
            "machine": machine_id(),
            "pid": child.pid,
            "start": _proc_stat(child.pid)[1],
        }
        assert not local_worker_is_dead(info)
        assert local_worker_is_dead({**info, "start": "1"})  # same pid, another process
        assert not local_worker_is_dead({**info, "machine": "elsewhere"})  # heartbeat's job
        child.kill()
        time.sleep(0.2)  # not reaped yet: a zombie counts as dead
        assert local_worker_is_dead(info)
    finally:
        child.kill()
        child.wait()
    assert local_worker_is_dead(info)


# -- sweeps of the toy app ------------------------------------------------------------------


def test_resume_continues_the_study_without_replaying_proposals(tmp_path: Path) -> None:
    space = ["x=interval(-5,5)", "y=interval(-5,5)", "hydra.sweeper.sampler.seed=7"]
    first, at_once = sweeps(
        (tmp_path / "a", [*space, "hydra.sweeper.n_trials=2"]),
        (tmp_path / "b", [*space, "hydra.sweeper.n_trials=4"]),
    )
    assert first.returncode == 0, first.stderr
    assert at_once.returncode == 0, at_once.stderr
    resumed = sweep(tmp_path / "a", *space, "hydra.sweeper.n_trials=4")
    assert resumed.returncode == 0, resumed.stderr

    trials = by_number(load_study(tmp_path / "a"))
    assert sorted(trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials.values())
    params = [(t.params["x"], t.params["y"]) for _, t in sorted(trials.items())]
    # A naive resume re-seeds the sampler and proposes trial 0's and 1's points again.
    assert len(set(params)) == 4
    # Seeds derive from the trial index: resumed == run in one go.
    other = [
        (t.params["x"], t.params["y"])
        for _, t in sorted(by_number(load_study(tmp_path / "b")).items())
    ]
    assert params == other

    # Job number = trial number, all in the first run's sweep dir; result.json matches.
    sweep_dirs = {Path(t.user_attrs["run_dir"]).parent for t in trials.values()}
    assert len(sweep_dirs) == 1 and len(list((tmp_path / "a" / "multirun").iterdir())) == 1
    (sweep_dir,) = sweep_dirs
    for number, trial in trials.items():
        assert Path(trial.user_attrs["run_dir"]) == sweep_dir / str(number)
        result = json.loads((sweep_dir / str(number) / "result.json").read_text())
        assert result["num"] == number and result["x"] == trial.params["x"]
        assert result["value"] == pytest.approx(trial.value)

    best = min(trials.values(), key=lambda t: t.value)
    results = yaml.safe_load((sweep_dir / "optuna_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best.value)
    assert results["best_trials"][0]["number"] == best.number
    assert results["best_trials"][0]["run_dir"] == str(sweep_dir / str(best.number))
    assert f"x={best.params['x']!r}" in results["best_trials"][0]["overrides"]
    assert results["trials"]["complete"] == 4
    assert f"#{best.number}: " in resumed.stdout  # the best trial is printed


def test_sigkill_mid_trial_then_the_same_command_finishes_the_study(tmp_path: Path) -> None:
    signals = tmp_path / "signals"
    command = _command(
        tmp_path,
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweeper.n_trials=3",
        "x=interval(-2,2)",
        "hang_on=[1]",
        f"signal_dir={signals}",
    )
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(signals / "started-1")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    killed = by_number(load_study(tmp_path))
    assert killed[0].state == TrialState.COMPLETE and killed[1].state == TrialState.RUNNING
    first_dir = Path(killed[0].user_attrs["run_dir"])
    first_result = (first_dir / "result.json").read_bytes()
    first_mtime = (first_dir / "result.json").stat().st_mtime_ns

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert rerun.returncode == 0, rerun.stderr

    trials = by_number(load_study(tmp_path))
    complete = [n for n, t in trials.items() if t.state == TrialState.COMPLETE]
    assert complete == [0, 2, 3]
    assert trials[0].value == killed[0].value
    assert (first_dir / "result.json").read_bytes() == first_result
    assert (first_dir / "result.json").stat().st_mtime_ns == first_mtime
    # The killed trial is failed at once (its pid is gone) and retried with its parameters.
    assert trials[1].state == TrialState.FAIL
    assert f"pid {proc.pid}" in trials[1].user_attrs["lost"]
    assert trials[2].system_attrs["failed_trial"] == 1
    assert trials[2].params == trials[1].params
    sweep_dir = first_dir.parent
    for number in (2, 3):
        assert Path(trials[number].user_attrs["run_dir"]) == sweep_dir / str(number)
        assert json.loads((sweep_dir / str(number) / "result.json").read_text())["num"] == number
    # The killed trial's dir (known before it ran) keeps what the trial left: no result.
    assert trials[1].user_attrs["run_dir"] == str(sweep_dir / "1")
    assert (sweep_dir / "1").is_dir() and not (sweep_dir / "1" / "result.json").exists()
    assert "lost: worker pid" in rerun.stdout  # the summary table says what happened


def test_a_failing_trial_is_recorded_and_the_study_continues(tmp_path: Path) -> None:
    result = sweep(
        tmp_path,
        "x=interval(-2,2)",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.max_failure_rate=0.6",
        "fail_on=[1]",
        "nan_on=[2]",
        "exit_on=[3]",
        "hydra.sweeper.custom_search_space=quadratic.extend_space",
    )
    assert result.returncode == 1
    trials = by_number(load_study(tmp_path))
    states = [trials[n].state for n in range(5)]
    assert states == [TrialState.COMPLETE] + [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    assert trials[1].user_attrs["error"] == "RuntimeError: failure switch for job 1"
    assert trials[2].user_attrs["error"] == "the job returned nan"
    assert trials[3].user_attrs["error"] == (
        "JobExit: the job exited with code 2 after ValueError: bad value for job 3"
    )
    assert "3 of 5 trials of this run failed ([1, 2, 3])" in result.stderr
    table = result.stdout[result.stdout.index("trial  state") :]
    assert "FAIL" in table and "RuntimeError: failure switch for job 1" in table
    for number in (0, 4):  # custom_search_space: y's range follows x, plus a fixed override
        trial = trials[number]
        written = json.loads((Path(trial.user_attrs["run_dir"]) / "result.json").read_text())
        assert written["num"] == number and written["y"] == trial.params["y"]
        positive = trial.params["x"] > 0
        assert (-1 <= trial.params["y"] <= 0) if positive else (-3 <= trial.params["y"] <= -2)
        assert written["note"] == ("x positive" if positive else "x not positive")


def test_too_many_failures_stop_the_sweep(tmp_path: Path) -> None:
    result = sweep(
        tmp_path,
        "x=interval(-2,2)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.25",
        "fail_on=[0,1,2,3]",
    )
    assert result.returncode == 1
    assert len(load_study(tmp_path).trials) == 2  # the second failure exceeds 0.25 * 4
    assert "sweep stopped: 2 trials failed, more than max_failure_rate=0.25" in result.stderr


def test_pruning_is_off_by_default_and_prunes_when_configured(tmp_path: Path) -> None:
    common = ["hydra/sweeper/sampler=grid", "x=choice(1.5,5)", "y=-2", "steps=3"]
    pruned, plain = sweeps(
        (
            tmp_path / "pruned",
            [*common, "hydra/sweeper/pruner=threshold", "hydra.sweeper.pruner.upper=1.0"],
        ),
        (tmp_path / "plain", common),
    )
    assert pruned.returncode == 0, pruned.stderr
    trials = {t.params["x"]: t for t in load_study(tmp_path / "pruned").trials}
    assert trials[1.5].state == TrialState.COMPLETE and trials[1.5].value == 0.25
    assert trials[5].state == TrialState.PRUNED  # value 16 > upper at step 0
    steps = sorted(p.name for p in Path(trials[5].user_attrs["run_dir"]).glob("step-*"))
    assert steps == ["step-0"]

    assert plain.returncode == 0, plain.stderr
    trials = {t.params["x"]: t for t in load_study(tmp_path / "plain").trials}
    assert trials[5].state == TrialState.COMPLETE and trials[5].value == 16
    assert trials[5].intermediate_values == {0: 16.0, 1: 16.0, 2: 16.0}


def test_two_objectives_give_the_pareto_front(tmp_path: Path) -> None:
    result = sweep(
        tmp_path,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.direction=[minimize,minimize]",
        "x=choice(-1,0,1,2)",
        "y=-2",
        "objectives=2",
    )
    assert result.returncode == 0, result.stderr
    (results_file,) = (tmp_path / "multirun").glob("*/optuna_results.yaml")
    results = yaml.safe_load(results_file.read_text())
    assert results["directions"] == ["minimize", "minimize"]
    assert results["n_trials"] == 4  # n_trials=20 is capped to the grid
    # (value, |x|): x=-1 (4,1), x=0 (1,0), x=1 (0,1), x=2 (1,2): two are not dominated.
    front = sorted((t["params"]["x"], t["values"]) for t in results["best_trials"])
    assert front == [(0, [1.0, 0.0]), (1, [0.0, 1.0])]
    assert "Pareto-optimal trials (minimize, minimize):" in result.stdout


def test_a_bad_search_space_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = sweep(tmp_path, "hydra/sweeper/sampler=grid", "x=interval(0,1)")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: x: the grid sampler needs discrete values: use choice(...), a,b,c or range(...)"
    )
    assert "Traceback" not in result.stderr


# -- PostgreSQL: several workers on one study --------------------------------------------------


def _postgres_bindir() -> Path | None:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL cluster on loopback; its URL carries a password to be masked."""
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="rerank-sweeps-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to own the test cluster")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()

    def pg(*args: str) -> None:
        subprocess.run(as_owner + list(args), check=True, capture_output=True, timeout=60)

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-N")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(base / "log"),
        "-o",
        options,
        "-w",
        "start",
    )
    try:
        yield f"postgresql://postgres:pg-s3cret@127.0.0.1:{port}/postgres"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_three_postgres_workers_one_killed(tmp_path: Path, postgres_url: str) -> None:
    signals = tmp_path / "signals"
    command = _command(
        tmp_path,
        "hydra/sweeper/sampler=grid",
        f"hydra.sweeper.storage={postgres_url}",
        "hydra.sweeper.study_name=pg-grid",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        # Pretend the workers are on different machines: only the heartbeat finds the dead one.
        "hydra.sweeper.check_local_pids=false",
        "x=choice(0,1,2)",
        "y=choice(-2,0)",
        "sleep=1.5",
        f"signal_dir={signals}",
    )
    workers = [
        subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    pids = {w.pid: w for w in workers}
    victim, victim_trial = None, None
    deadline = time.monotonic() + 60
    while victim is None:
        assert time.monotonic() < deadline, "no worker started a trial"
        for worker in workers:
            assert worker.poll() is None, worker.communicate()[1][-3000:]
        for started in sorted(signals.glob("started-*")) if signals.exists() else []:
            text = started.read_text()
            if text.isdigit() and int(text) in pids:
                victim, victim_trial = pids[int(text)], int(started.name.split("-")[1])
                break
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    outputs = {}
    for worker in workers:
        outputs[worker.pid] = worker.communicate(timeout=90)
    survivors = [w for w in workers if w is not victim]
    assert all(w.returncode == 0 for w in survivors), [outputs[w.pid][1][-2000:] for w in survivors]

    study = optuna.load_study(study_name="pg-grid", storage=storage_url_with_driver(postgres_url))
    trials = by_number(study)
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert len({(t.params["x"], t.params["y"]) for t in complete}) == 6  # no duplicates
    assert trials[victim_trial].state == TrialState.FAIL  # found by its stale heartbeat
    retries = [t for t in complete if t.system_attrs.get("failed_trial") == victim_trial]
    assert len(retries) == 1 and retries[0].params == trials[victim_trial].params
    assert not any(t.state == TrialState.RUNNING for t in trials.values())
    # The storage password never reaches logs or files.
    texts = [out + err for out, err in outputs.values()]
    texts += [p.read_text() for p in (tmp_path / "multirun").rglob("*.yaml")]
    texts += [p.read_text() for p in (tmp_path / "multirun").rglob("*.log")]
    assert all("pg-s3cret" not in text for text in texts)
    assert any("postgres:***@127.0.0.1" in text for text in texts)
