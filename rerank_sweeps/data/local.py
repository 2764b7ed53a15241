"""The local-file source (`data=local`): question/answer pairs from a jsonl, parquet or csv file.

Bad rows (empty or non-text fields, invalid JSON lines) are skipped and counted; a missing
file, an unknown format, a missing column or a wrong text encoding is a one-line UserError.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_sweeps.config import DataConfig, UserError
from rerank_sweeps.data.rows import SourceRows
from rerank_sweeps.models import first_line


def local_format(path: Path, fmt: str | None) -> str:
    """The file format: `data.format`, else from the suffix (.jsonl/.ndjson, .parquet/.pq, .csv)."""
    if fmt:
        return fmt
    suffixes = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
    suffixes |= {".csv": "csv"}
    found = suffixes.get(path.suffix.lower())
    if found is None:
        raise UserError(
            f"cannot tell the format of data.path={str(path)!r} from its suffix: "
            "set data.format to jsonl, parquet or csv"
        )
    return found


def _check_local_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"data.path={str(path)!r} does not exist")
    if not path.is_file():
        raise UserError(f"data.path={str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise UserError(f"data.path={str(path)!r} is empty")


def check_encoding(path: Path, encoding: str) -> None:
    """A one-line UserError naming the first line that is not valid `encoding`: a wrong
    encoding would otherwise be read with replacement characters and the run would go on."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path.name}: line {number} is not valid {encoding} (byte "
                    f"{line[err.start]:#04x} at column {err.start + 1}): set data.encoding "
                    "(e.g. data.encoding=latin-1) or convert the file"
                ) from None


def _jsonl_records(
    path: Path, rows: SourceRows, max_rows: int | None, encoding: str = "utf-8"
) -> tuple[list[dict], list[str]]:
    records: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    with path.open(encoding=encoding) as handle:
        for line in handle:
            if max_rows is not None and len(records) + sum(rows.skipped.values()) >= max_rows:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                rows.rows_read += 1
                rows.skipped["invalid JSON line"] += 1
                continue
            if not isinstance(record, dict):
                rows.rows_read += 1
                rows.skipped["line is not a JSON object"] += 1
                continue
            columns.update(dict.fromkeys(record))
            records.append(record)
    return records, list(columns)


def _missing_column_error(path: Path, key: str, column: str, columns: Sequence[str]) -> UserError:
    shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
    return UserError(
        f"column {column!r} ({key}) is not in {path.name}; its columns are: {shown or '(none)'}"
    )


def read_local(
    path: Path,
    fmt: str | None,
    qcol: str,
    acol: str,
    max_rows: int | None = None,
    encoding: str = "utf-8",
) -> SourceRows:
    """(question, answer) pairs from a jsonl, parquet or csv file; bad rows skipped and counted.

    Text files must be valid `encoding` throughout: the first bad line is a one-line error.
    """
    _check_local_file(path)
    fmt = local_format(path, fmt)
    rows = SourceRows(pairs=[])
    if fmt in ("jsonl", "csv"):
        check_encoding(path, encoding)
    if fmt == "jsonl":
        records, columns = _jsonl_records(path, rows, max_rows, encoding)
        if records:
            _require_columns(path, columns, qcol, acol)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise UserError(f"cannot read {path.name} as parquet: {first_line(err)}") from None
        columns = list(parquet.schema_arrow.names)
        _require_columns(path, columns, qcol, acol)
        table = parquet.read(columns=list(dict.fromkeys([qcol, acol])))
        if max_rows is not None:
            table = table.slice(0, max_rows)
        records = table.to_pylist()
    else:
        import pandas as pd

        try:
            frame = pd.read_csv(
                path, dtype=str, keep_default_na=False, nrows=max_rows, encoding=encoding
            )
        except Exception as err:  # pandas raises several types for a malformed file
            raise UserError(f"cannot read {path.name} as csv: {first_line(err)}") from None
        columns = [str(c) for c in frame.columns]
        _require_columns(path, columns, qcol, acol)
        records = frame[list(dict.fromkeys([qcol, acol]))].to_dict("records")
    rows.collect(records, qcol, acol)
    if rows.rows_read == 0:
        raise UserError(f"data.path={str(path)!r} has no rows")
    return rows


def _require_columns(path: Path, columns: Sequence[str], qcol: str, acol: str) -> None:
    for key, column in (("data.question_column", qcol), ("data.answer_column", acol)):
        if column not in columns:
            raise _missing_column_error(path, key, column, columns)


def load(data: DataConfig, seed: int) -> SourceRows:
    """The configured file's rows (the registry's reader for `local`; the seed is unused)."""
    assert data.path is not None  # DataConfig checks this for source=local
    return read_local(
        Path(data.path).expanduser(),
        data.format,
        data.question_column,
        data.answer_column,
        data.max_rows,
        data.encoding,
    )


def fingerprint(data: DataConfig) -> dict[str, Any]:
    """The file's path, size and mtime, and how it is read: an edited file re-splits."""
    assert data.path is not None
    path = Path(data.path).expanduser()
    _check_local_file(path)
    stat = path.stat()
    keys = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    keys |= {"format": local_format(path, data.format), "encoding": data.encoding}
    keys |= {"question_column": data.question_column, "answer_column": data.answer_column}
    return keys


def describe(data: DataConfig) -> str | None:
    """The file, for run descriptions (model cards)."""
    return data.path
