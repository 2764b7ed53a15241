"""Check that a run's saved hybrid baseline is LanceDB's own hybrid + RRFReranker order.

For every eval query of a finished run, ask LanceDB live
(`table.search(query_type="hybrid").vector(v).text(q).rerank(RRFReranker()).limit(depth)`,
exact vector search, the index's distance) and compare its ranked ids with the run's
`runs/hybrid-baseline@<k>.trec` (the whole ranked candidate list the evaluation reranked).
Prints how many queries agree exactly and the first disagreements; exits 1 if any differ.

    .venv/bin/python benchmarks/hybrid_baseline_check.py <run_dir> [--k 5]

The query vectors are computed as the candidates stage computes them (`index.embed`,
batched), so both see the same floats.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from _offline import REPO  # noqa: F401  (puts the repo on sys.path, sets offline env)

from rerank_sweeps.index import DISTANCE, embed, load_embedder, open_table  # noqa: E402


def read_trec(path: Path) -> dict[str, list[str]]:
    """qid -> doc ids in rank order."""
    ranked: dict[str, list[tuple[int, str]]] = {}
    for line in path.read_text().splitlines():
        qid, _, doc, rank, _score, _name = line.split()
        ranked.setdefault(qid, []).append((int(rank), doc))
    return {q: [d for _, d in sorted(rows)] for q, rows in ranked.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Compare the run's hybrid baseline with live LanceDB hybrid + RRF; 0 when all agree."""
    from lancedb.rerankers import RRFReranker

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--k", type=int, default=5, help="which hybrid-baseline@k run file")
    args = parser.parse_args(argv)
    record = json.loads((args.run_dir / "record.json").read_text())
    results = json.loads((args.run_dir / "results.json").read_text())
    conf = record["config"]
    cache = Path(conf["paths"]["root"]) / "cache"
    depth = int(results["protocol"]["depth_per_leg"][str(args.k)])
    table = open_table(cache / "index" / record["fingerprints"]["index"])
    split = cache / "split" / record["fingerprints"]["split"]
    questions = {}
    for line in (split / "eval.jsonl").read_text().splitlines():
        row = json.loads(line)
        questions[row["qid"]] = row["question"]
    ours = read_trec(args.run_dir / "runs" / f"hybrid-baseline@{args.k}.trec")
    qids = [q for q in questions if q in ours]
    embedder = load_embedder(conf["index"]["embedder"], "cpu")
    vectors = embed(
        embedder, [questions[q] for q in qids], conf["index"]["batch_size"], "embed queries"
    )
    differ = []
    for qid, vec in zip(qids, vectors, strict=True):
        got = (
            table.search(query_type="hybrid", vector_column_name="vector")
            .vector(vec)
            .text(questions[qid])
            .distance_type(DISTANCE)
            .bypass_vector_index()
            .rerank(RRFReranker())
            .select(["id"])
            .limit(depth)
            .to_arrow()
        )
        live = got["id"].to_pylist()
        if live != ours[qid][: len(live)] or len(live) != min(len(ours[qid]), depth):
            differ.append((qid, live[:8], ours[qid][:8]))
    print(
        f"hybrid-baseline@{args.k}: {len(qids) - len(differ)} of {len(qids)} queries equal "
        f"LanceDB's live hybrid + RRFReranker order (limit {depth} per leg)"
    )
    for qid, live, saved in differ[:5]:
        print(f"  {qid}: live {live} vs saved {saved}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
