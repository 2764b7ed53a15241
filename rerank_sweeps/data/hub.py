"""The Hugging Face hub source (`data=gooaq`, or any `source: hub` config): `load_dataset`.

Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) only the local datasets cache is tried; when
the hub cannot be reached the run stops at once with one line instead of the library's retries.
"""

from __future__ import annotations

import os
from typing import Any

from rerank_sweeps.config import DataConfig, UserError
from rerank_sweeps.data.rows import SourceRows
from rerank_sweeps.models import first_line, hub_unreachable_reason


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def read_hub(
    hub_id: str, split: str, qcol: str, acol: str, max_rows: int | None = None
) -> SourceRows:
    """(question, answer) pairs from `datasets.load_dataset(hub_id, split=...)`.

    Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) only the local datasets cache is tried; when
    the hub cannot be reached we stop at once with one line instead of the library's retries.
    """
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE")
    hint = "use data=local data.path=FILE or data=wordnet"
    if not offline:
        reason = hub_unreachable_reason()
        if reason is not None:
            raise UserError(
                f"cannot load data.hub_id={hub_id!r}: the Hugging Face hub is not reachable "
                f"({reason}); set HF_HUB_OFFLINE=1 to use a cached copy, or {hint}"
            )
    import datasets

    sliced = f"{split}[:{max_rows}]" if max_rows is not None else split
    try:
        dataset = datasets.load_dataset(hub_id, split=sliced)
    except Exception as err:  # datasets raises many types (connection, not found, bad split)
        where = "offline mode and not in the local cache" if offline else first_line(err)
        raise UserError(
            f"cannot load data.hub_id={hub_id!r} split {sliced!r}: {where}; {hint}"
        ) from None
    columns = list(dataset.column_names)
    for key, column in (("data.question_column", qcol), ("data.answer_column", acol)):
        if column not in columns:
            raise UserError(
                f"column {column!r} ({key}) is not in {hub_id}; its columns are: {', '.join(columns)}"
            )
    rows = SourceRows(pairs=[])
    questions, answers = dataset[qcol], dataset[acol]
    rows.collect(({qcol: q, acol: a} for q, a in zip(questions, answers, strict=True)), qcol, acol)
    return rows


def load(data: DataConfig, seed: int) -> SourceRows:
    """The configured data set's rows (the registry's reader for `hub`; the seed is unused)."""
    return read_hub(
        data.hub_id, data.hub_split, data.question_column, data.answer_column, data.max_rows
    )


def fingerprint(data: DataConfig) -> dict[str, Any]:
    """The data set, split and columns (the hub copy is taken as fixed)."""
    keys = {"hub_id": data.hub_id, "hub_split": data.hub_split}
    keys |= {"question_column": data.question_column, "answer_column": data.answer_column}
    return keys


def describe(data: DataConfig) -> str | None:
    """The data set id, for run descriptions (model cards)."""
    return data.hub_id
