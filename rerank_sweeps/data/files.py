"""The data stages' JSON-lines files: writing records, and reading an artifact's parts back."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from rerank_sweeps.cache import Artifact
from rerank_sweeps.config import UserError

Record = TypeVar("Record")


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line (UTF-8, non-ASCII kept as is)."""
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file of an artifact (blank lines skipped), or a
    one-line UserError naming the missing file or the line that is not JSON."""
    if not path.is_file():
        raise UserError(f"{path} is missing: the artifact is incomplete")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise UserError(f"{path}:{n}: not JSON ({err.msg})") from None
    return rows


def read_part(
    path_or_artifact: Path | str | Artifact, part: str, record: type[Record]
) -> list[Record]:
    """The records of `<artifact>/<part>.jsonl`, each line built as `record(**fields)`.

    The one reader of split and negatives artifacts (`load_split`, `load_negatives`).
    """
    root = (
        path_or_artifact.path if isinstance(path_or_artifact, Artifact) else Path(path_or_artifact)
    )
    return [record(**fields) for fields in read_jsonl(root / f"{part}.jsonl")]
