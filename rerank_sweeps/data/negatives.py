"""The negatives stage: mined train and dev n-tuples as a cached artifact, and its reader.

The miner is `mining.model_id` (`mining.source=model`, see `mining`) or the first-stage
retriever (`mining.source=retriever`, see `retriever`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from rerank_sweeps.cache import Artifact, Cache
from rerank_sweeps.config import MiningConfig, RunConfig, UserError
from rerank_sweeps.data.files import read_part, write_jsonl
from rerank_sweeps.data.mining import MinedRows, load_miner, mine_negatives
from rerank_sweeps.data.retriever import distractor_rows, mine_from_retriever
from rerank_sweeps.data.rows import Negatives, NTuple, QAPair
from rerank_sweeps.data.split import load_split

log = logging.getLogger(__name__)

NEGATIVES_VERSION = 2  # 2: dev rows keep between `negatives` and dev_negatives


def miner_config(conf: RunConfig) -> MiningConfig:
    """The mining settings in force: with `mining.source=retriever` the miner is the index's
    embedder (the first stage whose candidates the reranker will see)."""
    if conf.mining.source == "retriever":
        return replace(conf.mining, model_id=conf.index.embedder)
    return conf.mining


def negatives_stage(
    conf: RunConfig, cache: Cache, split_art: Artifact, index_art: Artifact | None = None
) -> Artifact:
    """Mined train and dev n-tuples (key: conf.mining, conf.negatives, the split's key).

    Training rows get exactly `negatives` negatives: with `mining.source=model`, mined by
    `mining.model_id` from the training answers; with `mining.source=retriever`, retrieved by
    the index embedder from the training answers and the corpus's distractors (`index_art`
    lends the distractors' vectors). Dev rows get between `negatives` and
    max(mining.dev_negatives, negatives) from train+dev answers, for the mined-tuple dev
    evaluator; `mining.dev_negatives=0` mines none (the dev signal is then the candidates).
    """
    mining = miner_config(conf)
    config = {"mining": mining, "negatives": conf.negatives, "seed": conf.seed}

    def build(out_dir: Path, work_dir: Path) -> None:
        split = load_split(split_art)
        dev_count = max(mining.dev_negatives, conf.negatives) if mining.dev_negatives else 0
        started = time.perf_counter()
        bf16 = False
        if mining.source == "retriever":
            from rerank_sweeps.index import known_vectors

            known = known_vectors(index_art)
            pool = split.train + distractor_rows(split)
            retriever_conf = replace(conf, mining=mining)

            def mine(rows: list[QAPair], pool_rows: list[QAPair], n: int, low: int) -> MinedRows:
                return mine_from_retriever(
                    retriever_conf, rows, pool_rows, known, n, conf.seed, low, work_dir
                )
        else:
            model, bf16 = load_miner(mining)
            embeddings = work_dir / "embeddings"  # survives a killed build: resume
            pool = split.train

            def mine(rows: list[QAPair], pool_rows: list[QAPair], n: int, low: int) -> MinedRows:
                return mine_negatives(
                    rows, pool_rows, model, mining, n, conf.seed, low, cache_folder=embeddings
                )

        train = mine(split.train, pool, conf.negatives, conf.negatives)
        train_seconds = time.perf_counter() - started
        if dev_count:
            dev = mine(split.dev, split.train + split.dev, dev_count, conf.negatives)
        else:
            dev = MinedRows([], [], [], {"rows": len(split.dev), "kept": 0})
        if not train.tuples:
            raise UserError(
                "hard-negative mining kept no training rows: relax mining.margin, lower "
                "mining.range_min or raise mining.range_max"
            )
        write_jsonl(out_dir / "train.jsonl", (asdict(t) for t in train.tuples))
        write_jsonl(out_dir / "dev.jsonl", (asdict(t) for t in dev.tuples))
        stats = {
            "model_id": mining.model_id,
            "source": mining.source,
            "pool": {
                "train_answers": len(split.train),
                "distractors": len(pool) - len(split.train),
            },
            "bf16": bf16,
            "train": train.stats | {"seconds": round(train_seconds, 3)},
            "dev": dev.stats | {"negatives": dev_count},
            "seconds": round(time.perf_counter() - started, 3),
        }
        (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
        log.info(
            "negatives: %d train tuples, %d dev tuples with %s in %.1fs",
            len(train.tuples),
            len(dev.tuples),
            mining.model_id,
            stats["seconds"],
        )

    inputs = [split_art] + ([index_art] if mining.source == "retriever" and index_art else [])
    return cache.stage("negatives", NEGATIVES_VERSION, config, inputs, build)


def load_negatives(path_or_artifact: Path | str | Artifact) -> Negatives:
    """Read a negatives artifact written by `negatives_stage`."""
    return Negatives(
        train=read_part(path_or_artifact, "train", NTuple),
        dev=read_part(path_or_artifact, "dev", NTuple),
    )
