"""Candidate retrieval speed and exactness against the numpy brute-force floor.

Builds a 100k-row LanceDB table (WordNet glosses as text when /usr/share/wordnet exists,
else synthetic text; random unit vectors for the vector leg), then retrieves candidates for
2000 queries and all three query types exactly as `evaluate.candidates_stage` does
(batched exact vector search, threaded BM25, hybrid = both legs merged + RRF baseline), and
compares with numpy brute-force top-D over the same vectors. Prints the time ratio (goal <= 10x)
and checks that LanceDB's exact vector results equal brute force (order differences allowed
only between rows whose distances tie within float32 rounding).

    .venv/bin/python benchmarks/candidates.py [--rows 100000] [--queries 2000] [--depth 40]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from rerank_sweeps import evaluate as ev
from rerank_sweeps import index

WORDNET = Path("/usr/share/wordnet")
TIE_TOLERANCE = 1e-5  # float32 dot products of unit vectors agree to ~1e-7; this is generous


def wordnet_glosses(limit: int) -> list[tuple[str, str]]:
    """(first lemma, gloss) pairs from the WordNet data files."""
    out: list[tuple[str, str]] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = WORDNET / f"data.{pos}"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or " | " not in line:
                continue
            head, gloss = line.split(" | ", 1)
            lemma = head.split()[4].replace("_", " ")
            out.append((re.sub(r"\(.*?\)", "", lemma), gloss.strip()))
            if len(out) >= limit:
                return out
    return out


def corpus_texts(rows: int, rng: np.random.Generator) -> tuple[list[str], list[str], str]:
    """`rows` texts and a pool of query words; WordNet glosses, topped up synthetically."""
    pairs = wordnet_glosses(rows) if WORDNET.is_dir() else []
    texts = [g for _, g in pairs]
    lemmas = [lemma for lemma, _ in pairs]
    source = f"wordnet ({len(texts)} glosses)" if texts else "synthetic"
    if len(texts) < rows:
        vocab = np.array([f"w{i}" for i in range(30000)])
        zipf = 1 / np.arange(1, len(vocab) + 1)
        zipf /= zipf.sum()
        extra = rows - len(texts)
        words = rng.choice(vocab, size=(extra, 12), p=zipf)
        texts += [" ".join(w) for w in words]
        lemmas += list(rng.choice(vocab, size=extra, p=zipf))
        source += f" + {extra} synthetic"
    return texts, lemmas, source


def numpy_topk(
    corpus: np.ndarray, queries: np.ndarray, depth: int, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-`depth` by dot product: (indices, similarities), best first."""
    idx_out = np.empty((len(queries), depth), dtype=np.int64)
    sim_out = np.empty((len(queries), depth), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ corpus.T
        part = np.argpartition(-sims, depth - 1, axis=1)[:, :depth]
        vals = np.take_along_axis(sims, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)  # by similarity, then row (LanceDB's tie rule)
        idx_out[start : start + chunk] = np.take_along_axis(part, order, axis=1)
        sim_out[start : start + chunk] = np.take_along_axis(vals, order, axis=1)
    return idx_out, sim_out


def compare_exact(
    lance: list[dict], np_idx: np.ndarray, np_sim: np.ndarray, ids: list[str]
) -> dict[str, int]:
    """Count queries equal to brute force, equal up to float ties, and truly different."""
    counts = {"identical": 0, "tie_only": 0, "different": 0}
    for row, idx, sims in zip(lance, np_idx, np_sim, strict=True):
        expected = [ids[i] for i in idx]
        if row["ids"] == expected:
            counts["identical"] += 1
            continue
        # Position by position the similarities still agree: the differing ids are swaps
        # between rows that tie within float rounding, not a different answer.
        lance_sims = 1.0 - np.asarray(row["distances"], dtype=np.float64)
        ties = len(lance_sims) == len(sims) and np.allclose(lance_sims, sims, atol=TIE_TOLERANCE)
        counts["tie_only" if ties else "different"] += 1
    return counts


def main() -> None:
    """Build the table, time both paths, print the ratio and the exactness check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--depth", type=int, default=40, help="per leg: overfetch 4 x top_k 10")
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    texts, lemmas, source = corpus_texts(args.rows, rng)
    ids = [f"d{i}" for i in range(args.rows)]
    vectors = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    picks = rng.choice(len(lemmas), size=args.queries, replace=False)
    questions = [f"what does {lemmas[i]} mean" for i in picks]

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        table = index.write_table(Path(tmp) / "db", ids, texts, vectors)
        print(
            f"table: {args.rows} rows ({source}), dim {args.dim}, built in {time.perf_counter() - started:.1f}s"
        )

        started = time.perf_counter()
        np_idx, np_sim = numpy_topk(vectors, queries, args.depth)
        floor = time.perf_counter() - started

        started = time.perf_counter()
        vector_leg = index.vector_search(
            table, queries, args.depth, exact=True, desc="vector search (exact)"
        )
        t_vector = time.perf_counter() - started
        started = time.perf_counter()
        fts_leg = ev.fts_search(table, questions, args.depth)
        t_fts = time.perf_counter() - started
        started = time.perf_counter()
        hybrid_sizes = []
        for v, f in zip(vector_leg, fts_leg, strict=True):
            hybrid_sizes.append(len(ev.merged_candidates(v["ids"], f["ids"])))
            ev.rrf_order(v, f)
        t_hybrid = time.perf_counter() - started
    total = t_vector + t_fts + t_hybrid

    n = args.queries
    print(
        f"numpy brute force (floor, vector only): {floor:7.2f}s  {1000 * floor / n:6.2f} ms/query"
    )
    print(
        f"LanceDB vector leg (exact, batched):   {t_vector:7.2f}s  {1000 * t_vector / n:6.2f} ms/query"
    )
    print(
        f"LanceDB FTS leg (BM25, {ev.FTS_THREADS} threads):     {t_fts:7.2f}s  {1000 * t_fts / n:6.2f} ms/query"
    )
    print(
        f"hybrid merge + RRF baseline:           {t_hybrid:7.2f}s  (mean {np.mean(hybrid_sizes):.1f} candidates)"
    )
    print(f"candidates, 3 query types:             {total:7.2f}s  {1000 * total / n:6.2f} ms/query")
    print(
        f"ratio to the floor: all legs {total / floor:.1f}x (goal <= 10x); vector leg alone {t_vector / floor:.1f}x"
    )
    counts = compare_exact(vector_leg, np_idx, np_sim, ids)
    print(
        f"exact vector results vs brute force: {counts['identical']}/{n} identical, "
        f"{counts['tie_only']} differ only among float ties (|d| <= {TIE_TOLERANCE}), "
        f"{counts['different']} different"
    )
    assert counts["different"] == 0, "LanceDB's exact search disagrees with brute force"


if __name__ == "__main__":
    main()
