"""What a run prints: our log lines and progress bars, not the libraries' chatter.

By default the libraries we drive (transformers, sentence-transformers, PyLate, datasets,
LanceDB, the Hugging Face hub) speak only about warnings that matter; their weight-loading
reports, INFO lines and progress bars are silenced. Our own bars show only where somebody
watches (a terminal); in a log file or a pipe each stage says in one line what it did instead.
`-v` (or `hydra.verbose=true`) brings everything back.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import Any

VERBOSE_ENV = "RERANK_SWEEPS_VERBOSE"
VERBOSE_FLAGS = ("-v", "--verbose")

# Loggers of libraries whose INFO lines repeat what our own lines say (model loading, every
# evaluator's MAP/MRR/NDCG, checkpoint saving); their warnings still show.
_LIBRARY_LOGGERS = (
    "sentence_transformers",
    "pylate",
    "datasets",
    "lancedb",
    "huggingface_hub",
    "httpx",
    "urllib3",
    "filelock",
    "optimum",
    "onnxruntime",
    "openvino",
    "torch",
    "wandb",
)

# Warnings that fire on every run and tell a user of this tool nothing they can act on.
_IGNORED_WARNINGS = (
    r".*Token indices sequence length is longer.*",
    r".*mtime may not be reliable.*",
    r".*`resume_download` is deprecated.*",
    r".*TypedStorage is deprecated.*",
    r".*torch.utils._pytree._register_pytree_node.*",
)


def verbose() -> bool:
    """Whether this process (or the command that started it) asked for the libraries' detail."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def take_verbose_flag(argv: list[str]) -> list[str]:
    """`argv` without `-v`/`--verbose`, remembering the flag in the environment (so the
    latency child process and Hydra's jobs see it too)."""
    if any(a in VERBOSE_FLAGS for a in argv):
        os.environ[VERBOSE_ENV] = "1"
    return [a for a in argv if a not in VERBOSE_FLAGS]


def is_terminal() -> bool:
    """Whether a person is watching: stderr (where bars and logs go) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def show_bars() -> bool:
    """Whether progress bars are drawn: on a terminal (or with -v), unless TQDM_DISABLE says no."""
    if os.environ.get("TQDM_DISABLE", "") not in ("", "0"):
        return False
    return verbose() or is_terminal()


def progress(iterable: Any = None, **kwargs: Any) -> Any:
    """Our progress bar (tqdm, with rate and ETA): drawn only where somebody watches, and
    cleared when done, since the stage's own log line then says what it did."""
    from tqdm.auto import tqdm

    kwargs["disable"] = bool(kwargs.get("disable")) or not show_bars()
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def prepare_environment() -> None:
    """Settings the libraries read when they are first imported: call before importing them.

    Child processes inherit them. Values a user set in the environment win.
    """
    if verbose():
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")  # W&B would re-print our console into its log
    if not is_terminal():
        # Bars redrawn with carriage returns become one endless line in a file or a pipe.
        os.environ.setdefault("TQDM_DISABLE", "1")


def quiet_libraries() -> None:
    """Silence the libraries' loggers, load reports and bars for this process (idempotent)."""
    prepare_environment()
    if verbose():
        return
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    # The LOAD REPORT tables (UNEXPECTED/MISSING keys of a base model loaded under a new
    # head) are expected for every reranker trained from a base model.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def progress_callback() -> Any:
    """A trainer callback that replaces transformers' ProgressCallback: one training bar with
    the loss and dev metric as its postfix (on a terminal), one log line per dev evaluation,
    never the raw log dicts the library writes between bar updates."""
    from transformers.trainer_callback import TrainerCallback

    log = logging.getLogger("rerank_sweeps.train")

    class QuietProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Any = None
            self.step = self.first_step = self.quarter = 0
            self.started = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.bar = progress(total=state.max_steps, desc="train", unit="step")
                self.bar.update(state.global_step)
                self.step = self.first_step = state.global_step
                self.quarter = 4 * state.global_step // max(1, state.max_steps)
                self.started = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.step)
                self.step = state.global_step
                if self.bar.disable:
                    self._heartbeat(state)

        def _heartbeat(self, state: Any) -> None:
            # Without a drawn bar (a pipe, a log file) a long training would be silent for
            # minutes: one line at each quarter, with the rate and the time left.
            total = max(1, state.max_steps)
            quarter = 4 * state.global_step // total
            if quarter <= self.quarter or state.global_step >= total:
                return
            self.quarter = quarter
            elapsed = time.monotonic() - self.started
            done = max(1, state.global_step - self.first_step)
            rate = elapsed / done
            log.info(
                "train: step %d/%d, %.1f s/step, about %d s left",
                state.global_step,
                total,
                rate,
                round(rate * (total - state.global_step)),
            )

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if self.bar is None or not logs:
                return
            if "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)
            dev = {k: v for k, v in logs.items() if k.startswith("eval_") and "ndcg@10" in k}
            if dev:
                key = min(dev, key=len)  # the primary (mean) metric has the shortest key
                log.info(
                    "step %d/%d: %s %.4f", state.global_step, state.max_steps, key[5:], dev[key]
                )

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return QuietProgress()


def use_quiet_progress(trainer: Any) -> Any:
    """`trainer` with our progress callback instead of the library's (unless verbose)."""
    if verbose():
        return trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.pop_callback(ProgressCallback)
    trainer.pop_callback(PrinterCallback)
    trainer.add_callback(progress_callback())
    return trainer


class ConsoleFormatter(logging.Formatter):
    """`HH:MM:SS message`, with the level named from WARNING up: short lines that fit a
    terminal (the run dir's run.log keeps the full format)."""

    def __init__(self) -> None:
        super().__init__(fmt="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """The record as one console line (plus a traceback, when there is one)."""
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            stamp, _, rest = text.partition(" ")
            text = f"{stamp} {record.levelname}: {rest}"
        return text


def _comparison(record: dict[str, Any], qt: str, system: str, metric: str) -> str:
    value = record.get("metrics", {}).get(f"{qt}/{system}/{metric}")
    if value is None:
        return ""
    paired = record.get("paired", {}).get(f"{qt}/{system}-baseline/{metric}")
    if not paired:
        return f"{value:.3f}"
    lo, hi = (100 * v for v in paired["interval"])
    p = paired["p_value"]
    p_text = f"p={p:.2g}" if p >= 0.001 else "p<0.001"
    return f"{value:.3f} {100 * paired['diff']:+.1f} [{lo:+.1f},{hi:+.1f}] {p_text}"


def closing_summary(record: dict[str, Any], conf: Any, loader: str) -> str:
    """The lines that end a run: the objective, the headline comparison (reranked and fused vs
    the first stage, points with the paired 95% interval and p) and where everything is;
    `loader` says how a user loads the model (the architecture's `loader`)."""
    run_dir = record.get("run_dir", "")
    seconds = sum(record.get("stage_seconds", {}).values())
    lines = [f"── done in {int(seconds // 60)}m{int(seconds % 60):02d}s · {run_dir}"]
    for name, value in zip(
        record.get("objective_names", []), record.get("objective", []), strict=False
    ):
        lines.append(f"objective  {name} = {value:.4f}")
    metric = f"hit@{min(conf.top_k)}"
    systems = [
        s for s in ("reranked", "fused") if _comparison(record, conf.query_type.types[0], s, metric)
    ]
    if systems:
        n = (
            record.get("paired", {})
            .get(f"{conf.query_type.types[0]}/{systems[0]}-baseline/{metric}", {})
            .get("n")
        )
        head = f"{metric}{f' ({n} queries)' if n else ''}"
        lines.append(f"{head:<20}{'baseline':<10}" + "".join(f"{s:<36}" for s in systems).rstrip())
        for qt in conf.query_type.types:
            base = record.get("metrics", {}).get(f"{qt}/baseline/{metric}")
            cells = "".join(f"{_comparison(record, qt, s, metric):<36}" for s in systems)
            lines.append(f"  {qt:<18}{'' if base is None else f'{base:.3f}':<10}{cells}".rstrip())
        lines.append("  (difference in points vs baseline, paired 95% interval, exact McNemar p)")
    gate = record.get("dev_gate")
    if gate:
        verdict = "passed" if gate["passed"] else "FAILED (do not deploy as is)"
        lines.append(
            f"dev gate   {verdict}: dev ndcg@10 {gate['reranked']:.3f} vs first stage "
            f"{gate['first_stage']:.3f}"
        )
    if record.get("model_dir"):
        lines.append(f"model      {record['model_dir']}  ({loader})")
    files = "table.md (all metrics), results.json, record.json, runs/*.trec, run.log"
    lines.append(f"files      {files}{', latency.md' if conf.latency.enabled else ''}")
    lines.append(f"report     python -m rerank_sweeps.report {conf.paths.root}")
    return "\n".join(lines)


def latency_summary(flat: dict[str, float]) -> str:
    """End-to-end p50 (rerank p50) in ms per device, system and candidate count: one line per
    system, to fit a terminal (latency.md has p95, speed-ups and accuracy)."""
    rows: dict[tuple[str, str], dict[int, str]] = {}
    from rerank_sweeps.records import LatencyKey

    for name, value in flat.items():
        key = LatencyKey.try_parse(name)
        if key is None or key.stat != "p50_ms" or key.n is None:
            continue
        device, system, n = key.device, key.system, key.n
        rerank = flat.get(str(LatencyKey(device, system, str(n), "rerank_p50_ms")))
        rows.setdefault((device, system), {})[n] = f"{value:.1f}" + (
            f" ({rerank:.1f})" if rerank is not None else ""
        )
    lines = []
    for device in dict.fromkeys(d for d, _ in rows):
        lines.append(f"latency {device}, p50 ms end to end (rerank part), by candidates N:")
        for (dev, system), cells in rows.items():
            if dev == device:
                text = "  ".join(f"N={n} {cells[n]:<15}" for n in sorted(cells)).rstrip()
                lines.append(f"  {system:<18}{text}")
    return "\n".join(lines)
