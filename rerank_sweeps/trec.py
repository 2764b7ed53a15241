"""TREC files of an evaluation: written by the run, read back by the results page.

`qrels.trec` holds `qid 0 docid 1` per relevant id; `runs/<qt>-<system>@<k>.trec` holds each
query's whole ranked candidate list for that k (metrics cut it at k), as `qid Q0 docid rank
score name`. The scores are rank-derived (n, n-1, ..., 1), so every TREC tool reads back
exactly our order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rerank_sweeps.candidates import EvalItem

QRELS = "qrels.trec"
RUNS = "runs"


def run_name(query_type: str, system: str, k: int) -> str:
    """The TREC run's name and file stem: <qt>-<system>@<k>."""
    return f"{query_type}-{system}@{k}"


def write_qrels(path: Path, items: Sequence[EvalItem]) -> None:
    """TREC qrels: `qid 0 docid 1` for each relevant id."""
    with path.open("w", encoding="utf-8") as f:
        for item in items:
            for doc in sorted(item.relevant):
                f.write(f"{item.qid} 0 {doc} 1\n")


def write_run(
    path: Path, name: str, items: Sequence[EvalItem], rankings: Sequence[Sequence[str]]
) -> None:
    """TREC run: `qid Q0 docid rank score name`; score = n - rank + 1 keeps our order exact."""
    with path.open("w", encoding="utf-8") as f:
        for item, ranking in zip(items, rankings, strict=True):
            n = len(ranking)
            for rank, doc in enumerate(ranking, 1):
                f.write(f"{item.qid} Q0 {doc} {rank} {n - rank + 1} {name}\n")


def run_path(run_dir: Path, query_type: str, system: str, k: int) -> Path:
    """Where a run dir keeps the TREC run of one query type, system and k."""
    return Path(run_dir) / RUNS / f"{run_name(query_type, system, k)}.trec"


def read_qrels(path: Path) -> dict[str, set[str]]:
    """The relevant doc ids per query id of a qrels file (relevance > 0)."""
    relevant: dict[str, set[str]] = {}
    for line in Path(path).read_text().splitlines():
        qid, _, doc, rel = line.split()
        if int(rel) > 0:
            relevant.setdefault(qid, set()).add(doc)
    return relevant


def read_run(path: Path) -> dict[str, list[str]]:
    """The ranked doc ids per query id of a run file, in rank order."""
    ranked: dict[str, list[tuple[int, str]]] = {}
    for line in Path(path).read_text().splitlines():
        qid, _, doc, rank, _score, _name = line.split()
        ranked.setdefault(qid, []).append((int(rank), doc))
    return {qid: [doc for _, doc in sorted(docs)] for qid, docs in ranked.items()}


def per_query_hits(run_dir: Path, query_type: str, system: str, k: int) -> dict[str, float]:
    """hit@k per query id, recomputed from the run's qrels.trec and TREC run file."""
    relevant = read_qrels(Path(run_dir) / QRELS)
    ranked = read_run(run_path(run_dir, query_type, system, k))
    return {
        qid: float(any(d in docs for d in ranked.get(qid, [])[:k]))
        for qid, docs in relevant.items()
    }
