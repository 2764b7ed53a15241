"""Training throughput: our `train.py` path against plain library scripts, same everything.

    .venv/bin/python benchmarks/train_throughput.py [--steps 30] [--warmup 5] [--rounds 1]

For each architecture on all-MiniLM-L6-v2 (offline copy via `resolve_model`), batch 16,
max length 96 (ColBERT: query length 32), one hard negative per question, the same
synthetic question/answer tuples and the same bf16 setting:

- ce:      our `train.build_trainer` (CrossEncoderTrainer + our arguments, evaluator, callbacks)
           vs a plain sentence-transformers script (CrossEncoder + BinaryCrossEntropyLoss +
           CrossEncoderTrainer with default arguments);
- colbert: our path (SentenceTransformerTrainer + PyLate Contrastive + ColBERTCollator,
           no-duplicates batches) vs a plain PyLate script (the same pieces, library defaults).

Each (arch, implementation) trains in its own child process (so its peak RSS is its own),
alternating ours/plain within a round so load changes hit both alike. Samples/s is measured
between step-end callbacks over `--steps` steps after `--warmup` steps; no evaluation or
checkpoint falls inside that window. Prints samples/s, ours/plain (goal >= 0.95), peak RSS,
and the load average beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _offline import REPO  # noqa: E402  (puts the repo on sys.path, sets offline env)

from rerank_sweeps.models import MINILM_ID  # noqa: E402

BATCH, MAX_LENGTH, QUERY_LENGTH, EMBEDDING_SIZE, LR = 16, 96, 32, 128, 2e-5
SEED = 13


def loadavg() -> str:
    """The 1-minute load average (other processes share these cores)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def synthetic_tuples(n: int, seed: int = SEED):
    """Deterministic (question, positive, [negative]) rows of realistic length (~10 / ~30 words)."""
    from rerank_sweeps.data import NTuple
    from rerank_sweeps.tiny import WORDS

    rng = random.Random(seed)

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [NTuple(sentence(6, 14) + "?", sentence(15, 45), [sentence(15, 45)]) for _ in range(n)]


class StepClock:
    """A TrainerCallback that records the wall time at every step end."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.times.append(time.perf_counter())

        self.times: list[float] = []
        self.callback = _Callback()

    def samples_per_second(self, warmup: int, steps: int) -> float:
        """Batch size * steps / seconds between the end of step `warmup` and `warmup + steps`."""
        if len(self.times) < warmup + steps + 1:
            raise RuntimeError(f"only {len(self.times)} steps recorded")
        seconds = self.times[warmup + steps] - self.times[warmup]
        return BATCH * steps / seconds


def bf16_setting() -> bool:
    """The setting both paths use: ours resolves arch.bf16=auto, the plain script is told."""
    from rerank_sweeps.train import use_bf16

    return use_bf16("auto")


def ours(arch: str, rows, total_steps: int, out: Path, model_id: str) -> StepClock:
    """Our path: `train.build_trainer` with the real config (arch=<arch> base=minilm)."""
    from hydra import compose, initialize_config_module

    from rerank_sweeps import train
    from rerank_sweeps.validation import validate

    with initialize_config_module("rerank_sweeps.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"arch={arch}",
                "base=minilm",
                f"base.model_id={model_id}",
                "logger=none",
                f"arch.batch_size={BATCH}",
                f"arch.max_length={MAX_LENGTH}",
                f"arch.lr={LR}",
                f"arch.max_steps={total_steps}",
                "arch.evals_per_epoch=1",  # with max_steps: the one evaluation is at the end
                "negatives=1",
                f"seed={SEED}",
            ]
            + (
                [f"arch.query_length={QUERY_LENGTH}", f"arch.embedding_size={EMBEDDING_SIZE}"]
                if arch == "colbert"
                else []
            ),
        )
    conf = validate(cfg)
    model, _ = train.load_start_model(conf)
    evaluator = train.make_evaluator(conf, rows[:8])
    trainer, sched, _ = train.build_trainer(conf, model, rows, evaluator, out)
    assert sched["interval"] == total_steps, sched  # nothing but training inside the window
    clock = StepClock()
    trainer.add_callback(clock.callback)
    trainer.train()
    return clock


def plain(arch: str, rows, total_steps: int, out: Path, model_id: str) -> StepClock:
    """What a user would write from the libraries' docs, with the same hyper-parameters."""
    import torch
    from datasets import Dataset
    from transformers import set_seed

    from rerank_sweeps.models import resolve_model

    set_seed(SEED)
    path = resolve_model(model_id)
    common = dict(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        max_steps=total_steps,
        warmup_steps=0.1,
        seed=SEED,
        bf16=bf16_setting(),
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        report_to="none",
    )
    clock = StepClock()
    if arch == "ce":
        from sentence_transformers.cross_encoder import (
            CrossEncoder,
            CrossEncoderTrainer,
            CrossEncoderTrainingArguments,
        )
        from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

        model = CrossEncoder(path, num_labels=1, max_length=MAX_LENGTH)
        pairs = {"query": [], "passage": [], "label": []}
        for t in rows:
            for text, label in [(t.positive, 1.0), (t.negatives[0], 0.0)]:
                pairs["query"].append(t.question)
                pairs["passage"].append(text)
                pairs["label"].append(label)
        trainer = CrossEncoderTrainer(
            model=model,
            args=CrossEncoderTrainingArguments(**common),
            train_dataset=Dataset.from_dict(pairs),
            loss=BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(1.0)),
            callbacks=[clock.callback],
        )
    else:
        from pylate import losses, models, utils
        from sentence_transformers import SentenceTransformerTrainer
        from sentence_transformers.training_args import (
            BatchSamplers,
            SentenceTransformerTrainingArguments,
        )

        model = models.ColBERT(
            path,
            embedding_size=EMBEDDING_SIZE,
            query_length=QUERY_LENGTH,
            document_length=MAX_LENGTH,
        )
        data = {
            "query": [t.question for t in rows],
            "positive": [t.positive for t in rows],
            "negative_1": [t.negatives[0] for t in rows],
        }
        trainer = SentenceTransformerTrainer(
            model=model,
            args=SentenceTransformerTrainingArguments(
                **common, batch_sampler=BatchSamplers.NO_DUPLICATES
            ),
            train_dataset=Dataset.from_dict(data),
            loss=losses.Contrastive(model),
            data_collator=utils.ColBERTCollator(model.tokenize),
            callbacks=[clock.callback],
        )
    trainer.train()
    return clock


def child(arch: str, impl: str, warmup: int, steps: int, model_id: str) -> dict:
    """One measurement in this process: train `warmup + steps + 1` steps, report samples/s."""
    total = warmup + steps + 1
    # CE: each tuple gives 2 pairs; enough rows that no path runs out within one epoch.
    rows = synthetic_tuples(BATCH * total * 2)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        clock = (ours if impl == "ours" else plain)(arch, rows, total, Path(tmp), model_id)
        wall = time.perf_counter() - started
    return {
        "arch": arch,
        "impl": impl,
        "samples_per_s": round(clock.samples_per_second(warmup, steps), 2),
        "seconds_per_step": round(BATCH / clock.samples_per_second(warmup, steps), 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(wall, 1),
        "bf16": bf16_setting(),
        "device": _device_name(),
        "threads": _threads(),
        "loadavg": loadavg(),
    }


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _run_child(args: argparse.Namespace, arch: str, impl: str, quiet: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", arch, impl, "--model", args.model]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{arch}/{impl} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    if not quiet:
        print(json.dumps(result), flush=True)
    return result


def main() -> None:
    """Run every (arch, implementation) in child processes and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=1, help="ours/plain pairs per arch")
    parser.add_argument("--arch", nargs="+", default=["ce", "colbert"])
    parser.add_argument(
        "--model", default=MINILM_ID, help="hub id or local dir (default: the offline MiniLM)"
    )
    parser.add_argument("--child", nargs=2, metavar=("ARCH", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child(*args.child, args.warmup, args.steps, args.model)
        print("RESULT " + json.dumps(result), flush=True)
        return

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {loadavg()}")
    results: list[dict] = []
    # One untimed child first: on a fresh H100 machine the first training process ran
    # 0.068-0.086 s/step and the same path 0.037 s/step in a later process.
    _run_child(args, args.arch[0], "plain", quiet=True)
    for arch in args.arch:
        for r in range(args.rounds):
            order = ("ours", "plain") if r % 2 == 0 else ("plain", "ours")
            for impl in order:
                results.append(_run_child(args, arch, impl))

    print()
    print(
        "| arch | ours samples/s | plain samples/s | ours/plain | peak RSS ours (MiB) | peak RSS plain (MiB) |"
    )
    print("|---|---|---|---|---|---|")
    for arch in args.arch:
        mine = [r for r in results if r["arch"] == arch and r["impl"] == "ours"]
        theirs = [r for r in results if r["arch"] == arch and r["impl"] == "plain"]
        a = statistics.median(r["samples_per_s"] for r in mine)
        b = statistics.median(r["samples_per_s"] for r in theirs)
        print(
            f"| {arch} | {a:.2f} | {b:.2f} | {a / b:.3f} | "
            f"{max(r['peak_rss_mib'] for r in mine):.0f} | {max(r['peak_rss_mib'] for r in theirs):.0f} |"
        )
    first = results[0]
    print(
        f"\nmodel {args.model}, batch {BATCH}, max length {MAX_LENGTH}, bf16 {first['bf16']}, "
        f"device {first['device']}, {first['threads']} threads, load now {loadavg()}"
    )


if __name__ == "__main__":
    main()
