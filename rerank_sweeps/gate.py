"""The dev gate as the report, the dashboard and the results page print it.

A run's dev gate says whether its trained reranker beat the first stage (no reranker) on the
dev questions; a failed gate marks the run with † in every table, with a footnote saying
which runs and what it means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rerank_sweeps.records import Record

GATE_FAILED_NOTE = (
    "the trained reranker did not beat the first stage on dev questions; its numbers are "
    "reported but it should not be deployed as is"
)
GATE_MARK = "†"


def _gate_metric(dev_gate: dict[str, Any]) -> str:
    """'dev nDCG@10' from the gate's metric ('dev ndcg@10, mean over query types')."""
    name = str(dev_gate.get("metric") or "dev metric").split(",")[0].strip()
    return name.replace("ndcg", "nDCG").replace("mrr", "MRR")


def gate_failed(record: Record) -> bool:
    """Whether the record's dev gate failed (False when the record has none)."""
    return record.gate_failed


def gate_mark(record: Record) -> str:
    """† for a run whose dev gate failed, else ''."""
    return GATE_MARK if record.gate_failed else ""


def gate_cell(record: Record) -> str:
    """passed / FAILED (dev nDCG@10 0.412 <= first stage 0.455) / – (no dev gate recorded)."""
    dev_gate = record.dev_gate
    if dev_gate is None or "passed" not in dev_gate:
        return "–"
    if dev_gate["passed"]:
        return "passed"
    numbers = gate_numbers(dev_gate)
    return f"FAILED ({numbers})" if numbers else "FAILED"


def gate_numbers(dev_gate: dict[str, Any]) -> str:
    """'dev nDCG@10 0.412 <= first stage 0.455' ('' when the gate holds no numbers)."""
    ours, first = dev_gate.get("reranked"), dev_gate.get("first_stage")
    if not isinstance(ours, (int, float)) or not isinstance(first, (int, float)):
        return ""
    return f"{_gate_metric(dev_gate)} {ours:.3f} <= first stage {first:.3f}"


def _label(record: Record) -> str:
    return record.label


def gate_footnote(records: Sequence[Record], name: Callable[[Record], str] = _label) -> str:
    """The line under a table that marks failed runs with †: which runs, and what it means."""
    failed = [r for r in records if r.gate_failed]
    if not failed:
        return ""
    runs = "; ".join(
        f"{name(r)}: {numbers}" if (numbers := gate_numbers(r.dev_gate or {})) else name(r)
        for r in failed
    )
    return f"{GATE_MARK} dev gate FAILED ({runs}): {GATE_FAILED_NOTE}."


def gate_note(records: Sequence[Record]) -> str:
    """The sentence under the jobs table explaining its dev gate column ('' when no run has one)."""
    gated = [r.dev_gate for r in records if r.dev_gate is not None]
    if not gated:
        return ""
    metric = _gate_metric(gated[0])
    note = (
        "dev gate: whether the trained reranker beats the first stage (no reranker) on the dev "
        f"questions ({metric}, mean over the dev query types); – where the run recorded none."
    )
    if any(r.gate_failed for r in records):
        note += f" FAILED: {GATE_FAILED_NOTE}."
    return note
