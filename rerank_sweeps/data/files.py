"""The data stages' JSON-lines files: writing records, and reading an artifact's parts back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rerank_sweeps.cache import Artifact

Record = TypeVar("Record")


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line (UTF-8, non-ASCII kept as is)."""
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, blank lines skipped."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


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
