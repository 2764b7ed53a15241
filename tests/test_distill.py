"""Distillation: teacher scores (miner, model directories, a teacher trained in the same job),
their cached artifact, the losses that learn from them, and the config checks.

Everything runs on the tiny random BERT / ModernBERT built by rerank_sweeps.tiny, on a toy set
whose positives describe their noun with colours and negatives with sizes: a signal the tiny
model learns in a few dozen steps. Torch runs on one thread (a shared 2-core machine).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, write_negatives

from rerank_sweeps import train
from rerank_sweeps.archs.ce import ce_dataset_and_loss
from rerank_sweeps.cache import Cache
from rerank_sweeps.config import ConfigError, RunConfig
from rerank_sweeps.data import NTuple
from rerank_sweeps.distill import teacher_scores_stage
from rerank_sweeps.distill_data import TeacherScores, load_teacher_scores
from rerank_sweeps.teacher import parse_teacher, teacher_run_config
from rerank_sweeps.validation import validate

NOUNS = (
    "apple banana cherry grape lemon mango orange peach pear plum berry melon cat dog horse "
    "cow sheep goat bird fish lion tiger bear wolf fox mouse rabbit snake car bus boat ship"
).split()
COLOURS = "red green blue yellow black white brown purple pink gray".split()
SIZES = "big small large little long short high low old new young hot cold warm".split()
# The tiny ColBERT teacher a two-stage config trains (sizes of experiment=tiny, a few steps).
TINY_COLBERT = (
    "{arch:colbert,batch_size:8,max_length:48,query_length:16,embedding_size:32,lr:1e-3,"
    "max_steps:2,bf16:false,checkpoint_minutes:null}"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def miner_teacher_conf(tmp_path: Path) -> RunConfig:
    """A CE distilled (margin_mse) from the miner's cosines, the tiny ModernBERT as miner."""
    return toy_conf(
        tmp_path,
        "ce",
        "arch.loss=margin_mse",
        "arch.teacher=miner",
        "mining.source=model",
        "mining.model_id=tiny-random/modernbert",
    )


def toy_tuples(seed: int = 0, num: int = 24, negatives: int = 3) -> list[NTuple]:
    """`what is a NOUN like` -> `the NOUN is COLOUR and COLOUR`, negatives with sizes."""
    rng = random.Random(seed)
    nouns = NOUNS[:num]

    def answer(noun: str, words: list[str]) -> str:
        return f"the {noun} is {rng.choice(words)} and {rng.choice(words)}"

    return [
        NTuple(
            f"what is a {noun} like",
            answer(noun, COLOURS),
            [answer(o, SIZES) for o in rng.sample([n for n in nouns if n != noun], negatives)],
        )
        for noun in nouns
    ]


def toy_conf(root: Path, arch: str, *extra: str) -> RunConfig:
    """The real config (experiment=tiny) made to learn the toy set in seconds."""
    return validate(
        compose_config(
            [
                "experiment=tiny",
                f"arch={arch}",
                "base=tiny_bert",
                f"paths.root={root}",
                "negatives=3",
                "epochs=1",
                "arch.lr=1e-3",
                "arch.batch_size=8",
                "arch.bf16=false",
                "arch.checkpoint_minutes=null",
                *extra,
            ]
        )
    )


def student_scores(arch: str, model, rows: list[NTuple]) -> list[np.ndarray]:
    """The model's raw scores of [positive, *negatives] for each row."""
    import torch

    out = []
    with torch.inference_mode():
        for t in rows:
            docs = [t.positive, *t.negatives]
            if arch == "ce":
                features = model.tokenizer(
                    [t.question] * len(docs), docs, padding=True, return_tensors="pt"
                )
                out.append(model.model(**features).logits[:, 0].numpy())
            else:
                from pylate.scores import colbert_scores_pairwise

                q = model.encode([t.question], is_query=True, show_progress_bar=False)[0]
                d = model.encode(docs, is_query=False, show_progress_bar=False)
                out.append(colbert_scores_pairwise([q] * len(docs), list(d)).numpy())
    return out


def teacher_agreement(scores: list[np.ndarray], teacher: list[list[float]]) -> float:
    """Share of (positive, negative) pairs the student orders as the teacher does."""
    agree = [
        (s[0] > s[i]) == (t[0] > t[i])
        for s, t in zip(scores, teacher, strict=True)
        for i in range(1, len(t))
    ]
    return float(np.mean(agree))


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize(
    ("arch", "loss", "steps", "batch"),
    # mse regresses absolute scores, one (question, text) pair per row: slower to get there.
    [("ce", "margin_mse", 30, 8), ("ce", "mse", 100, 16), ("colbert", "distillation", 30, 8)],
)
def test_each_distillation_loss_learns_the_teachers_order_not_the_labels(
    tmp_path, arch, loss, steps, batch
):
    """The teacher here ranks every negative (sizes) above the labelled positive (colours):
    only a loss that learns from the teacher's scores moves the student that way."""
    conf = toy_conf(
        tmp_path,
        arch,
        f"arch.loss={loss}",
        "arch.teacher=miner",
        "epochs=20",
        f"arch.max_steps={steps}",
        "arch.lr=3e-3",
        f"arch.batch_size={batch}",
    )
    rows = toy_tuples()
    teacher = [[0.0, 2.0, 1.5, 1.0] for _ in rows]
    model, _ = train.load_start_model(conf)
    before = teacher_agreement(student_scores(arch, model, rows), teacher)
    trainer, _, num_train = train.build_trainer(
        conf, model, rows, None, tmp_path / "out", TeacherScores(teacher, {"kind": "test"})
    )
    expected = {"margin_mse": "MarginMSELoss", "mse": "MSELoss", "distillation": "Distillation"}
    assert type(trainer.loss).__name__ == expected[loss]
    first = trainer.train_dataset[0]
    if loss == "margin_mse":  # one row per question; labels are the teacher's margins
        assert num_train == len(rows) and first["label"] == [-2.0, -1.5, -1.0]
    if loss == "mse":  # one row per (question, text); labels are the teacher's scores
        assert num_train == 4 * len(rows) and trainer.train_dataset["label"][:4] == teacher[0]
    if loss == "distillation":
        assert first["documents"] == [rows[0].positive, *rows[0].negatives]
        assert first["scores"] == teacher[0]
    trainer.train()
    assert trainer.state.global_step == steps
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    after = teacher_agreement(student_scores(arch, trainer.model, rows), teacher)
    assert after >= 0.8 and after > before + 0.2, (before, after)
    if arch == "ce":  # unbounded regression targets: predict() must not squash them
        assert type(trainer.model.activation_fn).__name__ == "Identity"


def test_teacher_scale_multiplies_the_targets(tmp_path):
    conf = toy_conf(tmp_path, "ce", "arch.loss=margin_mse", "arch.teacher=miner")
    scaled = toy_conf(
        tmp_path, "ce", "arch.loss=margin_mse", "arch.teacher=miner", "arch.teacher_scale=10"
    )
    rows = toy_tuples(num=4)
    teacher = TeacherScores([[1.0, 0.5, 0.25, 0.0] for _ in rows], {})
    labels = []
    for c in (conf, scaled):
        model, _ = train.load_start_model(c)
        dataset, _ = ce_dataset_and_loss(c, model, rows, teacher)
        labels.append(dataset[0]["label"])
    assert labels == [[0.5, 0.75, 1.0], [5.0, 7.5, 10.0]]
    assert train.arch_key(conf) != train.arch_key(scaled)


# ----------------------------------------------------------------------------- teacher scores


@pytest.fixture(scope="module")
def ce_teacher_dir(tmp_path_factory) -> Path:
    """A cross-encoder directory as a user would have one (not a model artifact of ours)."""
    import transformers
    from sentence_transformers import CrossEncoder

    from rerank_sweeps.models import resolve_model

    transformers.set_seed(7)
    folder = tmp_path_factory.mktemp("teacher") / "ce"
    CrossEncoder(resolve_model("tiny-random/bert"), num_labels=1, max_length=48).save(str(folder))
    return folder


def test_teacher_scores_of_a_directory_are_its_scores_cached_once(tmp_path, ce_teacher_dir):
    from rerank_sweeps.archs.ce import CrossEncoderReranker

    rows = toy_tuples()
    neg = write_negatives(tmp_path / "neg", rows, [])
    conf = toy_conf(tmp_path, "ce", "arch.loss=margin_mse", f"arch.teacher={ce_teacher_dir}")
    assert parse_teacher(conf.arch.teacher).model_kind == "ce"
    first = teacher_scores_stage(conf, Cache(conf.paths.cache), neg)
    assert not first.hit
    again = Cache(conf.paths.cache)
    second = teacher_scores_stage(conf, again, neg)
    assert second.hit and second.key == first.key and again.hits == {"teacher_scores"}
    scores = load_teacher_scores(second, rows).scores
    reranker = CrossEncoderReranker(ce_teacher_dir, device="cpu", bf16=False)
    for t, s in zip(rows[:3], scores, strict=False):
        expected = reranker.score_texts(t.question, [t.positive, *t.negatives])
        np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-5)
    stats = json.loads((second.path / "stats.json").read_text())
    assert stats["rows"] == len(rows) and stats["teacher"]["kind"] == "ce"
    # Other mined tuples, or another teacher, are other scores.
    other_neg = write_negatives(tmp_path / "neg2", toy_tuples(seed=1), [])
    assert teacher_scores_stage(conf, Cache(conf.paths.cache), other_neg).key != first.key
    miner = miner_teacher_conf(tmp_path)
    miner_art = teacher_scores_stage(miner, Cache(conf.paths.cache), neg)
    assert miner_art.key != first.key


def test_miner_teacher_scores_are_the_miners_cosine_similarities(tmp_path):
    from sentence_transformers import SentenceTransformer

    from rerank_sweeps.models import resolve_model

    rows = toy_tuples(num=6)
    neg = write_negatives(tmp_path / "neg", rows, [])
    conf = miner_teacher_conf(tmp_path)
    art = teacher_scores_stage(conf, Cache(conf.paths.cache), neg)
    scores = load_teacher_scores(art, rows).scores
    miner = SentenceTransformer(resolve_model("tiny-random/modernbert"), device="cpu")
    miner.max_seq_length = conf.mining.max_seq_length
    for t, s in zip(rows, scores, strict=True):
        q = miner.encode([t.question], normalize_embeddings=True)
        d = miner.encode([t.positive, *t.negatives], normalize_embeddings=True)
        np.testing.assert_allclose(s, (d @ q[0]).tolist(), rtol=1e-4, atol=1e-5)
    assert json.loads((art.path / "stats.json").read_text())["teacher"] == {
        "kind": "miner",
        "model_id": "tiny-random/modernbert",
        "max_seq_length": conf.mining.max_seq_length,
    }


# ----------------------------------------------------------------------------- two stages


def test_a_two_stage_config_trains_its_teacher_once_and_shares_it(tmp_path):
    """CE distilled (margin_mse) from a ColBERT trained first in the same job: a second job
    is all cache hits; the teacher is the model a ColBERT job of those settings trains; and
    the teacher's artifact directory, given as a path, is the same teacher."""
    rows, dev_rows = toy_tuples(), toy_tuples(seed=3, num=8)
    neg = write_negatives(tmp_path / "neg", rows, dev_rows)
    conf = toy_conf(
        tmp_path, "ce", "arch.loss=margin_mse", f"arch.teacher={TINY_COLBERT}", "arch.max_steps=2"
    )
    first = Cache(conf.paths.cache)
    student = train.model_stage(conf, first, neg, neg)
    assert [(stage, hit) for stage, _, hit, _ in first.events] == [
        ("model", False),  # the teacher
        ("teacher_scores", False),
        ("model", False),  # the student
    ]
    second = Cache(conf.paths.cache)
    assert train.model_stage(conf, second, neg, neg).key == student.key
    assert [hit for _, _, hit, _ in second.events] == [True, True, True]
    teacher_key = first.events[0][1]
    teacher_conf = teacher_run_config(conf)
    assert teacher_conf.arch.name == "colbert" and teacher_conf.arch.query_length == 16
    alone = train.model_stage(teacher_conf, Cache(conf.paths.cache), neg, neg)
    assert alone.hit and alone.key == teacher_key
    info = json.loads((student.path / "reranker.json").read_text())
    assert info["loss"] == "margin_mse" and info["steps"] == 2
    assert info["teacher"] == {"kind": "trained", "arch": "colbert", "model": teacher_key}
    assert (
        "Distilled (margin_mse) from the teacher" in (student.path / "model/README.md").read_text()
    )

    scores_art = Cache(conf.paths.cache).lookup("teacher_scores", first.events[1][1])
    assert scores_art is not None
    trained_scores = load_teacher_scores(scores_art, rows).scores
    # The same teacher named by its artifact directory (or its model/ folder): same scores.
    for path in (alone.path, alone.path / "model"):
        by_path = toy_conf(tmp_path, "ce", "arch.loss=margin_mse", f"arch.teacher={path}")
        assert parse_teacher(by_path.arch.teacher).path == str(alone.path)
        art = teacher_scores_stage(by_path, Cache(conf.paths.cache), neg)
        np.testing.assert_allclose(
            load_teacher_scores(art, rows).scores, trained_scores, rtol=1e-5, atol=1e-5
        )
        assert json.loads((art.path / "stats.json").read_text())["teacher"] == {
            "kind": "colbert",
            "artifact": alone.key,
        }


def test_the_teacher_is_in_the_students_cache_key(tmp_path):
    def key(*overrides: str) -> dict:
        return train.arch_key(toy_conf(tmp_path, "ce", *overrides))

    miner = key("arch.loss=margin_mse", "arch.teacher=miner")
    colbert = key("arch.loss=margin_mse", "arch.teacher=colbert")
    assert miner["teacher"] == "miner" and colbert["teacher"] == {"arch": "colbert"}
    # One teacher written two ways is one key; a teacher trained longer is another.
    assert key("arch.loss=margin_mse", "arch.teacher={arch:colbert}") == colbert
    assert key("arch.loss=margin_mse", "arch.teacher={arch:colbert,epochs:2}") != colbert
    # A loss that reads no teacher leaves it (and its scale) out: no retraining.
    assert key("arch.teacher=miner", "arch.teacher_scale=3") == key()
    assert "teacher" not in key() and "teacher_scale" not in key()


def test_the_distil_recipe_trains_the_main_jobs_colbert_as_its_teacher():
    """experiment=distil distils into a CE-MiniLM (margin_mse) the ColBERT-MiniLM that the
    main job (experiment=default) trains: the same model key config, so one cache serves both."""
    recipe = validate(compose_config(["experiment=distil"]))
    main = validate(compose_config(["experiment=default"]))
    assert (recipe.arch.name, recipe.arch.loss, recipe.base.name) == ("ce", "margin_mse", "minilm")
    teacher = teacher_run_config(recipe)
    for part in ("base", "data", "mining", "index", "dev", "seed", "negatives", "epochs", "init"):
        assert getattr(teacher, part) == getattr(main, part), part
    assert train.arch_key(teacher) == train.arch_key(main)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["arch=ce", "arch.loss=margin_mse"],
            "arch.loss='margin_mse' is not allowed without a teacher: set arch.teacher",
        ),
        (
            ["arch=colbert", "arch.loss=distillation"],
            "arch.loss='distillation' is not allowed without a teacher: set arch.teacher",
        ),
        (
            ["arch=ce", "arch.loss=margin_mse", "arch.teacher=ce"],
            'arch.teacher={"arch": "ce"} is not allowed: it is the model being trained here '
            "(a cycle)",
        ),
        (
            ["arch=colbert", "arch.loss=distillation", "arch.teacher={arch:colbert,epochs:1}"],
            'arch.teacher={"arch": "colbert", "epochs": 1} is not allowed: it is the model '
            "being trained here (a cycle)",
        ),
        (
            ["arch=ce", "arch.loss=mse", "arch.teacher={arch:colbert,epochs:0}"],
            'arch.teacher={"arch": "colbert", "epochs": 0} is not allowed: it would be untrained',
        ),
        (
            ["arch=ce", "arch.loss=mse", "arch.teacher={arch:colbert,lrr:1}"],
            "arch.teacher.lrr: unknown key (did you mean arch.teacher.lr?)",
        ),
        (
            ["arch=ce", "arch.loss=mse", "arch.teacher={arch:colbert,lr:-1}"],
            "arch.teacher.lr=-1.0 is not allowed: a number > 0",
        ),
        (
            ["arch=ce", "arch.loss=mse", "arch.teacher={arch:nope}"],
            'arch.teacher={"arch": "nope"} is not allowed: its arch must name an arch config',
        ),
        (
            ["arch=ce", "arch.loss=mse", "arch.teacher=/no/such/dir"],
            "arch.teacher='/no/such/dir' is not allowed: miner, an arch config name",
        ),
        (
            ["arch=ce", "arch.loss=mse", "arch.teacher=miner", "arch.teacher_scale=0"],
            "arch.teacher_scale=0.0 is not allowed: a number > 0",
        ),
    ],
    ids=[
        "margin_mse-no-teacher",
        "distillation-no-teacher",
        "itself-by-name",
        "itself-by-mapping",
        "untrained",
        "unknown-key",
        "bad-teacher-setting",
        "unknown-arch",
        "missing-dir",
        "scale",
    ],
)
def test_teacher_config_errors_are_one_line(overrides, expected):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["experiment=default", *overrides]))
    message = str(err.value)
    assert message.startswith(expected), message
    assert "\n" not in message


def test_a_directory_that_is_no_reranker_or_the_students_own_start_is_refused(
    tmp_path, ce_teacher_dir
):
    from rerank_sweeps.models import resolve_model

    bi_encoder = resolve_model("tiny-random/bert")  # a sentence-transformers bi-encoder
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["arch=ce", "arch.loss=mse", f"arch.teacher={bi_encoder}"]))
    assert str(err.value).startswith(f"arch.teacher={bi_encoder!r} is not allowed: neither a")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        validate(
            compose_config(
                [
                    "arch=ce",
                    "arch.loss=mse",
                    f"base.model_id={ce_teacher_dir}",
                    f"arch.teacher={ce_teacher_dir}",
                ]
            )
        )
    assert "it is the model being trained (its starting weights)" in str(err.value)
    assert "\n" not in str(err.value)
