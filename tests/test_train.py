"""Training: tiny models, both architectures, real learning, save/load, LanceDB, resume.

Everything runs on the tiny random BERT / ModernBERT (2 layers, hidden 32) built locally by
rerank_sweeps.tiny, on a toy set a 2-layer random model can learn in ~30 steps. Torch runs
on one thread here: on a shared 2-core machine, two OpenMP threads per process made these
tiny steps 10x slower (busy-waiting against other processes).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, compose_config, write_negatives

from rerank_sweeps import train, training
from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import RunConfig, UserError
from rerank_sweeps.data import NTuple
from rerank_sweeps.validation import validate

NOUNS = (
    "apple banana cherry grape lemon mango orange peach pear plum berry melon cat dog horse "
    "cow sheep goat bird fish lion tiger bear wolf fox mouse rabbit snake car bus boat ship "
    "plane bike road street city town village river lake sea ocean mountain hill forest"
).split()
# Positives describe their noun with colours, negatives (other nouns) with sizes and ages:
# a signal a 2-layer random model learns in a few dozen steps (matching the noun across
# the pair alone takes it thousands). Dev nouns never occur in training.
COLOURS = "red green blue yellow black white brown purple pink gray".split()
SIZES = "big small large little long short high low old new young hot cold warm".split()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_tuples(seed: int = 0, num_train: int = 32, num_dev: int = 12, negatives: int = 3):
    """(train, dev) n-tuples: `what is a NOUN like` -> `the NOUN is COLOUR and COLOUR`."""
    rng = random.Random(seed)
    train_nouns, dev_nouns = NOUNS[:num_train], NOUNS[num_train : num_train + num_dev]

    def answer(noun: str, words: list[str]) -> str:
        return f"the {noun} is {rng.choice(words)} and {rng.choice(words)}"

    def rows(nouns: list[str]) -> list[NTuple]:
        out = []
        for noun in nouns:
            others = rng.sample([n for n in nouns if n != noun], negatives)
            out.append(
                NTuple(
                    f"what is a {noun} like",
                    answer(noun, COLOURS),
                    [answer(o, SIZES) for o in others],
                )
            )
        return out

    return rows(train_nouns), rows(dev_nouns)


def toy_conf(root: Path, arch: str, base: str, *extra: str) -> RunConfig:
    """The real config (experiment=tiny) with what makes the toy learn in seconds."""
    return validate(
        compose_config(
            [
                "experiment=tiny",
                f"arch={arch}",
                f"base={base}",
                f"paths.root={root}",
                "negatives=3",
                "epochs=2",
                "arch.lr=1e-3",
                "arch.batch_size=8",
                *extra,
            ]
        )
    )


def reranker_json(art: Artifact) -> dict:
    return json.loads((art.path / "reranker.json").read_text())


def load_saved(arch: str, model_dir: Path):
    if arch == "ce":
        from sentence_transformers import CrossEncoder

        return CrossEncoder(str(model_dir))
    from pylate.models import ColBERT

    return ColBERT(str(model_dir))


def scores_of(arch: str, model, query: str, docs: list[str]) -> np.ndarray:
    if arch == "ce":
        return np.asarray(model.predict([(query, d) for d in docs], show_progress_bar=False))
    from pylate.scores import colbert_scores_pairwise

    q = model.encode([query], is_query=True, show_progress_bar=False)[0]
    d = model.encode(docs, is_query=False, show_progress_bar=False)
    return colbert_scores_pairwise([q] * len(docs), list(d)).numpy()


_TRAINED: dict[tuple[str, str], tuple[RunConfig, Artifact]] = {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train each (arch, base) on the toy set once per module, on demand."""

    def get(arch: str, base: str) -> tuple[RunConfig, Artifact]:
        if (arch, base) not in _TRAINED:
            root = tmp_path_factory.mktemp(f"{arch}-{base}")
            neg = write_negatives(root / "neg", *toy_tuples())
            # ColBERT gets 4x fewer examples than the CE (tuples, not pairs): more epochs.
            extra = ["epochs=4"] if arch == "colbert" else []
            conf = toy_conf(root, arch, base, *extra)
            _TRAINED[arch, base] = conf, train.model_stage(conf, Cache(conf.paths.cache), neg, neg)
        return _TRAINED[arch, base]

    yield get
    _TRAINED.clear()


# ----------------------------------------------------------------------------- tiny models


def test_tiny_models_are_deterministic_loadable_and_tokenize_words(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from rerank_sweeps import tiny

    paths = {name: tiny.build_tiny(name) for name in ("bert", "modernbert")}
    monkeypatch.setenv("RERANK_SWEEPS_MODELS", str(tmp_path))
    # Two threads race to build the same model in a fresh home: one builds, one waits.
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(tiny.build_tiny("bert"))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert not list(tmp_path.glob(".tmp-*")), "a temp build dir was left behind"
    for name in ("bert", "modernbert"):
        rebuilt = tiny.build_tiny(name)
        a = (paths[name] / "model.safetensors").read_bytes()
        b = (rebuilt / "model.safetensors").read_bytes()
        assert a == b, f"tiny {name} is not deterministic"
        model = SentenceTransformer(str(rebuilt), device="cpu")
        vocab = len(tiny._vocabulary())
        assert len(model.tokenizer) == vocab
        ids = model.tokenizer("the apple is red")["input_ids"]
        unk = model.tokenizer.convert_tokens_to_ids("[UNK]")
        assert unk not in ids and len(ids) == 6  # [CLS] the apple is red [SEP]
        # Unknown words fall back to character pieces, never [UNK].
        assert unk not in model.tokenizer("zyxw qq")["input_ids"]
        assert model.encode(["the apple is red"]).shape == (1, tiny.HIDDEN)


# ----------------------------------------------------------------------------- pure helpers


def test_rank_metrics_hand_checked():
    m = training.rank_metrics([0.5, 0.9, 0.1])  # the positive ranks 2nd of 3
    assert m["mrr@10"] == 0.5 and m["map"] == 0.5 and m["accuracy"] == 0.5
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(3))
    tie = training.rank_metrics([1.0, 1.0])  # ties count against the positive
    assert tie["mrr@10"] == 0.5 and tie["accuracy"] == 0.0
    deep = training.rank_metrics([0.0] + [1.0] * 10)  # rank 11 is outside @10
    assert deep["mrr@10"] == 0.0 and deep["ndcg@10"] == 0.0 and deep["map"] == pytest.approx(1 / 11)


def test_dev_rows_never_repeat_the_positive():
    rows = [
        NTuple("q1", "The answer.", ["the  answer.", "other", "Other", "third"]),
        NTuple("q2", "only", ["ONLY"]),  # nothing left to rank against: dropped
    ]
    assert training.clean_dev(rows) == [NTuple("q1", "The answer.", ["other", "third"])]


def test_schedule_fires_evaluations_within_an_epoch(tmp_path):
    conf = toy_conf(
        tmp_path, "ce", "tiny_bert", "epochs=1", "arch.batch_size=16", "arch.evals_per_epoch=2"
    )
    assert training.schedule(256, conf) == {"steps_per_epoch": 16, "total": 16, "interval": 8}
    conf = toy_conf(
        tmp_path, "ce", "tiny_bert", "epochs=3", "arch.batch_size=16", "arch.evals_per_epoch=3"
    )
    assert training.schedule(250, conf) == {"steps_per_epoch": 16, "total": 48, "interval": 6}
    conf = toy_conf(tmp_path, "ce", "tiny_bert", "arch.batch_size=16", "arch.max_steps=5")
    assert training.schedule(256, conf) == {"steps_per_epoch": 16, "total": 5, "interval": 3}


def test_bf16_setting():
    assert training.use_bf16("false") is False and training.use_bf16("true") is True
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    import torch

    if not torch.cuda.is_available():
        assert training.use_bf16("auto") == any(f in flags for f in ("avx512_bf16", "amx_tile"))


def test_cache_key_holds_only_what_training_reads(tmp_path, monkeypatch):
    calls = []

    def fake_train(
        conf, train_rows, dev_rows, out_dir, work_dir, dev_data=None, teacher_scores=None
    ):
        calls.append((conf.arch.name, conf.negatives))
        (out_dir / "reranker.json").write_text("{}")

    monkeypatch.setattr(train, "train_reranker", fake_train)
    neg = write_negatives(tmp_path / "neg", *toy_tuples())
    cache = Cache(tmp_path / "cache")

    def stage(*overrides: str) -> bool:
        conf = toy_conf(tmp_path, "ce", "tiny_bert", *overrides)
        return train.model_stage(conf, cache, neg, neg).hit

    assert stage() is False
    # Evaluation-only settings and the other architecture's fields never retrain.
    assert (
        stage("top_k=[1,3]", "query_type=fts", "eval.bootstrap=7", "latency.enabled=false") is True
    )
    assert stage("logger=wandb", "++arch.temperature=0.5", "++arch.query_length=8") is True
    assert stage("negatives=2") is False
    assert stage("arch.lr=5e-4") is False
    assert stage("seed=1") is False
    other_neg = write_negatives(tmp_path / "neg2", *toy_tuples(seed=1))
    conf = toy_conf(tmp_path, "ce", "tiny_bert")
    assert train.model_stage(conf, cache, other_neg, other_neg).hit is False
    assert len(calls) == 5


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("base", ["tiny_bert", "tiny_modernbert"])
@pytest.mark.parametrize("arch", ["ce", "colbert"])
def test_training_beats_the_untrained_model_and_round_trips(trained, arch, base):
    conf, art = trained(arch, base)
    info = reranker_json(art)
    before, after = info["dev_untrained"]["ndcg@10"], info["dev"]["ndcg@10"]
    assert after >= 0.85 and after >= before + 0.1, (before, after)
    assert info["steps"] == conf.epochs * info["schedule"]["steps_per_epoch"]
    assert info["schedule"]["interval"] < info["schedule"]["steps_per_epoch"]  # evals within epoch
    assert info["best_checkpoint_step"] is not None and info["best_checkpoint_step"] > 0
    # The saved model is the best checkpoint, whole (transformers 5 once reloaded it partially).
    assert after == pytest.approx(info["best_checkpoint_metric"], abs=1e-6)
    assert (info["arch"], info["base"], info["negatives"]) == (arch, base, 3)
    assert info["epochs"] == conf.epochs
    assert info["model_id"] == conf.base.model_id and info["resumed_from_step"] == 0
    card = (art.path / "model" / "README.md").read_text()
    assert card.startswith("---\n")  # the libraries' metadata block stays first and intact
    assert card.index("## rerank_sweeps training run") < card.index("\n# ")  # ours above theirs
    assert "Hard negatives per question: 3" in card and f"Epochs: {conf.epochs}; seed: 13" in card
    # Where they came from: the retriever's candidates, not mining.model_id, which it never used.
    assert conf.mining.source == "retriever"
    assert (
        "Hard negatives per question: 3 (the first stage's candidates: "
        "`sentence-transformers/all-MiniLM-L6-v2` and BM25, top of the top 20)"
    ) in card
    assert f"| ndcg@10 | {before:.4f} | {after:.4f} |" in card
    # Round trip: the saved model, loaded fresh, reproduces the dev metrics computed in memory.
    model = load_saved(arch, art.path / "model")
    _, dev = toy_tuples()
    assert training.evaluate_dev(train.make_evaluator(conf, dev), model) == pytest.approx(
        info["dev"], abs=1e-6
    )


def test_best_cross_encoder_checkpoint_is_reloaded_whole(tmp_path):
    import torch

    conf = toy_conf(tmp_path, "ce", "tiny_bert")
    model, _ = train.load_start_model(conf)
    train_rows, dev_rows = toy_tuples()
    evaluator = train.make_evaluator(conf, dev_rows)
    trainer, _, _ = train.build_trainer(conf, model, train_rows, evaluator, tmp_path / "out")
    checkpoint = tmp_path / "out" / "checkpoint-7"
    trainer.save_model(str(checkpoint))  # BERT weights are written with gamma/beta LayerNorm names
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    trainer.state.best_model_checkpoint = str(checkpoint)
    trainer._load_best_model()
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, saved[name]), f"{name} was not restored from the best checkpoint"


@pytest.mark.parametrize("arch", ["ce", "colbert"])
def test_epochs_zero_is_the_untrained_model_saved_alike(tmp_path, arch):
    neg = write_negatives(tmp_path / "neg", *toy_tuples())
    conf = toy_conf(tmp_path, arch, "tiny_bert", "epochs=0")
    cache = Cache(conf.paths.cache)
    zero = train.model_stage(conf, cache, neg, neg)
    untrained = train.untrained_stage(conf, cache)
    info = reranker_json(zero)
    assert info["epochs"] == 0 and info["steps"] == 0 and info["dev"] == info["dev_untrained"]
    assert reranker_json(untrained)["dev"] == {}
    # The fresh head / projection is seeded: both stages saved the same model, and saving then
    # loading it changes no score.
    query, docs = "what is a cat like", ["the cat is red and blue", "the dog is big and old"]
    direct, _ = train.load_start_model(conf)
    expected = scores_of(arch, direct, query, docs)
    for art in (zero, untrained):
        got = scores_of(arch, load_saved(arch, art.path / "model"), query, docs)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_training_without_dev_rows_keeps_checkpoints_and_reports_no_dev_metric(tmp_path):
    train_rows, _ = toy_tuples()
    neg = write_negatives(tmp_path / "neg", train_rows, [])
    conf = toy_conf(tmp_path, "ce", "tiny_bert", "arch.max_steps=4")
    info = reranker_json(train.model_stage(conf, Cache(conf.paths.cache), neg, neg))
    assert info["steps"] == 4 and info["dev"] == {} and info["dev_untrained"] == {}
    assert info["best_checkpoint_step"] is None


def test_colbert_accuracy_matches_pylate_triplet_evaluator(tmp_path):
    from pylate.evaluation import ColBERTTripletEvaluator

    _, dev = toy_tuples()
    conf = toy_conf(tmp_path, "colbert", "tiny_bert")
    model, _ = train.load_start_model(conf)
    ours = training.evaluate_dev(train.make_evaluator(conf, dev), model)
    triples = [(t.question, t.positive, n) for t in dev for n in t.negatives]
    pylate_eval = ColBERTTripletEvaluator(*map(list, zip(*triples, strict=True)), write_csv=False)
    assert ours["accuracy"] == pytest.approx(pylate_eval(model)["accuracy"], abs=1e-6)


def test_saved_cross_encoder_reranks_through_lancedb(trained, tmp_path):
    import lancedb
    from lancedb.rerankers import CrossEncoderReranker
    from sentence_transformers import CrossEncoder

    _, art = trained("ce", "tiny_bert")
    _, dev = toy_tuples()
    texts = sorted({d for t in dev for d in [t.positive, *t.negatives]})
    db = lancedb.connect(str(tmp_path / "db"))
    table = db.create_table("docs", data=[{"id": str(i), "text": t} for i, t in enumerate(texts)])
    table.create_fts_index("text", use_tantivy=False)
    model_dir = str(art.path / "model")
    reranker = CrossEncoderReranker(model_name=model_dir, device="cpu")
    target = dev[0]
    results = (
        table.search(target.question, query_type="fts").rerank(reranker=reranker).limit(5).to_list()
    )
    assert results[0]["text"] == target.positive
    expected = CrossEncoder(model_dir).predict([(target.question, r["text"]) for r in results])
    got = [r["_relevance_score"] for r in results]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got == sorted(got, reverse=True)


# ----------------------------------------------------------------------------- failures


def test_hub_only_model_fails_fast_with_one_line(tmp_path, monkeypatch):
    for overrides, env_offline in (
        (["base=modernbert"], True),
        (["base=modernbert"], False),  # no HF_HUB_OFFLINE: the probe, not minutes of retries
        (["base=minilm", "init=pretrained"], True),
    ):
        if env_offline:
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        else:
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
            monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.invalid")
        conf = validate(compose_config(["experiment=tiny", f"paths.root={tmp_path}", *overrides]))
        started = time.perf_counter()
        with pytest.raises(UserError) as err:
            train.untrained_stage(conf, Cache(conf.paths.cache))
        assert time.perf_counter() - started < 15
        message = str(err.value)
        assert "\n" not in message and train.start_model_id(conf) in message


_RESUME_SCRIPT = """
import json, sys
from pathlib import Path
sys.path[:0] = [{repo!r}, {repo!r} + "/tests"]
from rerank_sweeps import train
from rerank_sweeps.cache import Artifact, Cache
from test_train import toy_conf
neg = Artifact("negatives", {key!r}, Path({neg!r}), hit=True)
conf = toy_conf(Path({root!r}), "ce", "tiny_bert", *{overrides!r})
art = train.model_stage(conf, Cache(conf.paths.cache), neg, neg)
print(json.dumps(json.loads((art.path / "reranker.json").read_text())))
"""


def test_resume_after_sigkill_continues_from_the_checkpoint(tmp_path):
    neg = write_negatives(tmp_path / "neg", *toy_tuples())
    # 16 steps, a checkpoint after every one of them.
    overrides = ["epochs=1", "arch.max_steps=16", "arch.evals_per_epoch=32"]
    script = _RESUME_SCRIPT.format(
        repo=str(REPO), neg=str(neg.path), key=neg.key, root=str(tmp_path), overrides=overrides
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pattern = "cache/model/*.work/trainer/checkpoint-*/trainer_state.json"
    deadline = time.monotonic() + 120
    try:
        while not list(tmp_path.glob(pattern)):
            assert proc.poll() is None, "the training process ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = sorted(int(p.parent.name.split("-")[1]) for p in tmp_path.glob(pattern))
    assert saved and saved[-1] < 16
    assert not list(tmp_path.glob("cache/model/*/_COMPLETE.json")), (
        "a killed build left an artifact"
    )

    # The rerun (here, in-process) finds the same work dir through the same cache key.
    conf = toy_conf(tmp_path, "ce", "tiny_bert", *overrides)
    resumed_art = train.model_stage(conf, Cache(conf.paths.cache), neg, neg)
    info = reranker_json(resumed_art)
    assert info["resumed_from_step"] == saved[-1] >= 1  # continued, did not start over
    assert info["steps"] == 16
    assert not list(tmp_path.glob("cache/model/*.work")), "the work dir outlived the build"


# ----------------------------------------------------------------------------- checkpoints by time


def test_checkpoint_by_time_saves_only_after_the_interval(tmp_path):
    from transformers import TrainerControl

    from rerank_sweeps.config import ConfigError

    now = [1000.0]
    callback = training.checkpoint_by_time_callback(0.5, clock=lambda: now[0])  # 30 s
    control = TrainerControl()
    now[0] += 500  # building the trainer and loading a checkpoint do not count
    callback.on_train_begin(None, None, control)
    now[0] += 29.9
    assert not callback.on_step_end(None, None, control).should_save
    now[0] += 0.1
    assert callback.on_step_end(None, None, control).should_save
    control.should_save = False  # what the trainer's callback handler does after the save
    callback.on_save(None, None, control)  # the clock restarts at every save, by time or eval
    now[0] += 29
    assert not callback.on_step_end(None, None, control).should_save
    now[0] += 1
    assert callback.on_step_end(None, None, control).should_save
    assert training.checkpoint_by_time_callback(None) is None

    # On by default, in both trainers, with or without a dev evaluator; never in the cache key.
    conf = toy_conf(tmp_path, "ce", "tiny_bert")
    assert conf.arch.checkpoint_minutes == 10
    kinds = [type(c).__name__ for c in training.trainer_callbacks(conf, None)]
    assert "CheckpointByTime" in kinds
    assert "CheckpointByTime" in [
        type(c).__name__ for c in training.trainer_callbacks(conf, object())
    ]
    for arch in ("ce", "colbert"):
        fast = toy_conf(tmp_path, arch, "tiny_bert", "arch.checkpoint_minutes=0.5")
        never = toy_conf(tmp_path, arch, "tiny_bert", "arch.checkpoint_minutes=null")
        assert "checkpoint_minutes" not in train.arch_key(fast)
        assert train.arch_key(fast) == train.arch_key(never)
        assert "CheckpointByTime" not in [
            type(c).__name__ for c in training.trainer_callbacks(never, None)
        ]
    for bad in ("0", "-1"):
        with pytest.raises(ConfigError, match="arch.checkpoint_minutes"):
            toy_conf(tmp_path, "ce", "tiny_bert", f"arch.checkpoint_minutes={bad}")


def test_killed_run_loses_minutes_not_an_epoch(tmp_path):
    neg = write_negatives(tmp_path / "neg", *toy_tuples())
    # 128 pairs, batch 2: 64 steps an epoch, 2 epochs, one dev evaluation (and eval checkpoint)
    # per epoch at steps 64 and 128; checkpoints by time every 0.12 s in between.
    overrides = ["epochs=2", "arch.batch_size=2", "arch.evals_per_epoch=1"]
    first_eval = 64
    script = _RESUME_SCRIPT.format(
        repo=str(REPO),
        neg=str(neg.path),
        key=neg.key,
        root=str(tmp_path),
        overrides=[*overrides, "arch.checkpoint_minutes=0.002"],
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log_file = tmp_path / "child.log"
    with log_file.open("wb") as log_out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_out,
        )
    pattern = "cache/model/*.work/trainer/checkpoint-*/trainer_state.json"
    deadline = time.monotonic() + 120
    try:
        while not list(tmp_path.glob(pattern)):
            assert proc.poll() is None, (
                "training ended before its first checkpoint:\n" + log_file.read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        assert proc.poll() is None, "training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    (trainer_dir,) = tmp_path.glob("cache/model/*.work/trainer")
    checkpoint = training.last_complete_checkpoint(trainer_dir)
    assert checkpoint is not None
    step = int(checkpoint.name.split("-")[1])
    assert 1 <= step < first_eval, f"checkpoint-{step} is not a checkpoint by time"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == step and state["best_metric"] is None
    assert not [
        e for e in state["log_history"] if training.DEV_METRIC in e
    ]  # saved without an eval

    # The rerun (in-process, another checkpoint_minutes: not in the cache key) finds the same
    # work dir, continues from that step and keeps checkpointing by time across the evaluation.
    conf = toy_conf(tmp_path, "ce", "tiny_bert", *overrides, "arch.checkpoint_minutes=0.004")
    info = reranker_json(train.model_stage(conf, Cache(conf.paths.cache), neg, neg))
    assert info["resumed_from_step"] == step
    assert info["steps"] == 2 * first_eval
    assert info["schedule"]["interval"] == first_eval
    # The best model is still picked among the dev evaluations, and it is what was saved.
    assert info["best_checkpoint_step"] in (first_eval, 2 * first_eval)
    assert info["dev"]["ndcg@10"] == pytest.approx(info["best_checkpoint_metric"], abs=1e-6)
    assert not list(tmp_path.glob("cache/model/*.work")), "the work dir outlived the build"


# ----------------------------------------------------------------------------- arch.loss

_CE_LOSSES = {
    "bce": "BinaryCrossEntropyLoss",
    "lambda": "LambdaLoss",
    "listnet": "ListNetLoss",
    "cmnrl": "CachedMultipleNegativesRankingLoss",
}


@pytest.mark.parametrize("loss", list(_CE_LOSSES))
def test_each_cross_encoder_loss_trains_and_the_saved_model_reloads(tmp_path, loss):
    import torch
    from sentence_transformers import CrossEncoder

    from rerank_sweeps.archs.ce import CrossEncoderReranker

    conf = toy_conf(
        tmp_path,
        "ce",
        "tiny_bert",
        f"arch.loss={loss}",
        "arch.max_steps=3",
        "arch.bf16=false",
        "arch.checkpoint_minutes=null",
    )
    model, _ = train.load_start_model(conf)
    train_rows, _ = toy_tuples()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer, sched, num_train = train.build_trainer(conf, model, train_rows, None, tmp_path / "out")
    assert type(trainer.loss).__name__ == _CE_LOSSES[loss]
    first = trainer.train_dataset[0]
    if loss == "bce":  # one row per (question, text): batch_size counts pairs
        assert num_train == 4 * len(train_rows) and sched["steps_per_epoch"] == 16
        assert float(trainer.loss.pos_weight) == 3.0  # null pos_weight = the negatives
    else:  # one row per question with all its texts: batch_size counts questions
        assert num_train == len(train_rows) and sched["steps_per_epoch"] == 4
    t = train_rows[0]
    if loss in ("lambda", "listnet"):
        assert first == {
            "query": t.question,
            "docs": [t.positive, *t.negatives],
            "labels": [1, 0, 0, 0],
        }
        assert all(row["labels"] == [1, 0, 0, 0] for row in trainer.train_dataset)
    if loss == "cmnrl":
        assert list(first) == ["query", "positive", "negative_1", "negative_2", "negative_3"]
        assert list(first.values()) == [t.question, t.positive, *t.negatives]
    trainer.train()
    assert trainer.state.global_step == 3
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed nothing"

    model_dir = tmp_path / "model"
    trainer.model.save(str(model_dir))
    reloaded = CrossEncoder(str(model_dir))
    pairs = [(t.question, d) for d in [t.positive, *t.negatives]]
    scores = np.asarray(reloaded.predict(pairs, show_progress_bar=False))
    assert scores.shape == (4,) and np.isfinite(scores).all()
    # Listwise losses train unbounded logits: the saved model scores with them (Identity),
    # the others keep the Sigmoid their losses assume. Our reranker reads the raw logits.
    listwise = loss in ("lambda", "listnet")
    assert type(reloaded.activation_fn).__name__ == ("Identity" if listwise else "Sigmoid")
    ours = CrossEncoderReranker(model_dir, device="cpu", bf16=False).score_texts(
        t.question, [d for _, d in pairs]
    )
    raw = scores if listwise else np.log(scores / (1 - scores))
    np.testing.assert_allclose(ours, raw, rtol=1e-4, atol=1e-4)


def test_loss_is_in_the_cache_key_and_defaults_per_arch(tmp_path):
    def key(arch: str, *overrides: str) -> dict:
        return train.arch_key(toy_conf(tmp_path, arch, "tiny_bert", *overrides))

    assert key("ce")["loss"] == "bce" and key("colbert")["loss"] == "contrastive"
    # No loss key (or null): the architecture's default, the same model as naming it.
    for arch in ("ce", "colbert"):
        assert toy_conf(tmp_path, arch, "tiny_bert", "~arch.loss").arch.loss is None
        assert key(arch, "~arch.loss") == key(arch) == key(arch, "arch.loss=null")
    assert key("ce", "arch.loss=lambda") != key("ce") != key("ce", "arch.loss=cmnrl")
    # pos_weight is read by BinaryCrossEntropyLoss only.
    assert key("ce", "arch.pos_weight=2") != key("ce")
    assert key("ce", "arch.loss=lambda", "arch.pos_weight=2") == key("ce", "arch.loss=lambda")
    assert key("colbert", "++arch.pos_weight=2") == key("colbert")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["arch.loss=nope"],
            "arch.loss='nope' is not allowed: for arch=ce choose one of bce, lambda, listnet, "
            "cmnrl, margin_mse, mse",
        ),
        (
            ["arch=colbert", "arch.loss=lambda"],
            "arch.loss='lambda' is not allowed: for arch=colbert choose one of contrastive, "
            "distillation",
        ),
        (
            ["arch=ce", "arch.loss=contrastive"],
            "arch.loss='contrastive' is not allowed: for arch=ce choose one of bce, lambda, "
            "listnet, cmnrl, margin_mse, mse",
        ),
    ],
    ids=["unknown", "ce-loss-for-colbert", "colbert-loss-for-ce"],
)
def test_a_loss_the_arch_does_not_have_is_a_one_line_error(overrides, expected):
    from rerank_sweeps.config import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(compose_config(["experiment=tiny", *overrides]))
    assert str(err.value) == expected
