"""How much of the evaluation stage is spent outside the model's forward passes.

Builds a WordNet split fixture (glosses as the corpus, "what does <lemma> mean" questions whose
relevant document is their gloss), indexes it and retrieves candidates, then evaluates a
MiniLM cross-encoder (seeded random head: the same forward cost as a trained one) on them
with a fresh scores cache. Prints the split of the evaluation stage: model forward passes,
the rest of scoring (model load, tokenisation, batching), and reranking through LanceDB's
Reranker interface + metrics + bootstrap + files. Goal: outside forward <= 15%.

    .venv/bin/python benchmarks/eval_overhead.py [--corpus 3000] [--queries 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from candidates import wordnet_glosses  # noqa: E402

from rerank_sweeps import evaluate as ev  # noqa: E402
from rerank_sweeps import index  # noqa: E402
from rerank_sweeps.cache import Artifact, Cache  # noqa: E402
from rerank_sweeps.config import RunConfig  # noqa: E402
from rerank_sweeps.models import MINILM_ID, resolve_model  # noqa: E402


def write_split(root: Path, corpus: int, queries: int, seed: int) -> Artifact:
    """corpus.jsonl + eval.jsonl in the split artifact's format."""
    pairs = wordnet_glosses(corpus)
    if len(pairs) < corpus:
        raise SystemExit("needs WordNet in /usr/share/wordnet (apt-get install wordnet-base)")
    root.mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as f:
        for i, (_, gloss) in enumerate(pairs):
            f.write(json.dumps({"id": f"g{i}", "text": gloss}) + "\n")
    rng = np.random.default_rng(seed)
    with (root / "eval.jsonl").open("w") as f:
        for n, i in enumerate(rng.choice(len(pairs), size=queries, replace=False)):
            question = f"what does {pairs[i][0].strip()} mean"
            f.write(
                json.dumps({"qid": f"q{n}", "question": question, "relevant": [f"g{i}"]}) + "\n"
            )
    return Artifact("split", "bench", root, hit=True)


def write_model(root: Path, bf16: str) -> Artifact:
    """A MiniLM cross-encoder artifact with reranker.json (random head, fixed seed)."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    ce = CrossEncoder(resolve_model(MINILM_ID), num_labels=1, max_length=96)
    ce.save(str(root / "model"))
    meta = {"arch": "ce", "base": MINILM_ID, "model_id": MINILM_ID, "epochs": 0, "max_length": 96}
    (root / "reranker.json").write_text(json.dumps(meta))
    return Artifact("model", "bench-" + bf16, root, hit=True)


def main() -> None:
    """Run the evaluation once and print where its time went."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    conf = RunConfig()
    conf.eval.device = args.device
    conf.eval.bf16 = args.bf16
    conf.eval.batch_size = args.batch_size
    conf.eval.untrained = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        conf.paths.root = str(root / "outputs")
        cache = Cache(conf.paths.cache)
        split = write_split(root / "split", args.corpus, args.queries, conf.seed)
        started = time.perf_counter()
        index_art = index.index_stage(conf, cache, split)
        cand_art = ev.candidates_stage(conf, cache, split, index_art)
        print(
            f"index + candidates (not part of the split below): {time.perf_counter() - started:.1f}s"
        )
        model = write_model(root / "model", args.bf16)

        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as table:
            results = ev.evaluate(
                conf, cache, split, cand_art, {"reranked": model}, root / "run"
            ).results
        total = time.perf_counter() - started

    info = results["systems"]["reranked"]
    forward, scoring = info["forward_seconds"], info["seconds"]
    rest_of_scoring = scoring - forward
    outside_scoring = total - scoring
    outside = total - forward
    blocks = table.getvalue().split("\n\n")
    print("\n\n".join(blocks[:2]))  # the hit-rate table
    print(
        f"\nevaluation of {results['counts']['queries']} queries x {len(conf.query_type.types)} "
        f"query types x k={conf.top_k}: {info['pairs']} unique pairs scored once "
        f"(device {info['device']}, bf16 {info['bf16']}, batch {info['batch_size']})"
    )
    print(
        f"  model forward passes:                  {forward:7.2f}s  {100 * forward / total:5.1f}%"
    )
    print(
        f"  rest of scoring (load, tokenise, ...):  {rest_of_scoring:7.2f}s  {100 * rest_of_scoring / total:5.1f}%"
    )
    print(
        f"  rerank via Reranker, metrics, files:    {outside_scoring:7.2f}s  {100 * outside_scoring / total:5.1f}%"
    )
    print(f"  total evaluation stage:                 {total:7.2f}s")
    print(f"outside the forward passes: {100 * outside / total:.1f}% (goal <= 15%)")
    print(
        f"throughput: {info['pairs'] / forward:.0f} pairs/s in forward, {info['pairs'] / total:.0f} pairs/s overall"
    )


if __name__ == "__main__":
    main()
