"""The data sources, by name: the one table that maps `data.source` to its reader.

Adding a source is one module (with `load(data, seed) -> SourceRows` and
`fingerprint(data) -> dict`), one entry in `SOURCES` below and one YAML under
rerank_sweeps/conf/data/ (`source: <name>`). Nothing else branches on the source's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rerank_sweeps.config import ConfigError, DataConfig
from rerank_sweeps.data import hub, local, pydoc, wordnet
from rerank_sweeps.data.rows import SourceRows


@dataclass(frozen=True)
class DataSource:
    """How one source is read, identified on disk, checked and described."""

    # (data config, seed) -> the source's rows; the seed drives any `max_rows` sample.
    load: Callable[[DataConfig, int], SourceRows]
    # data config -> what identifies the content read (enters the split's cache key).
    fingerprint: Callable[[DataConfig], dict[str, Any]]
    # What `data.path` must name when the source cannot do without it (None: optional).
    path_required: str | None = None
    # data config -> a detail for run descriptions (the file, the data set id), or None.
    describe: Callable[[DataConfig], str | None] = lambda data: None


# In the order config errors list them.
SOURCES: dict[str, DataSource] = {
    "wordnet": DataSource(wordnet.load, wordnet.fingerprint),
    "pydoc": DataSource(pydoc.load, pydoc.fingerprint),
    "hub": DataSource(hub.load, hub.fingerprint, describe=hub.describe),
    "local": DataSource(
        local.load,
        local.fingerprint,
        path_required="a jsonl, parquet or csv file",
        describe=local.describe,
    ),
}
SOURCE_NAMES: tuple[str, ...] = tuple(SOURCES)


def data_source(name: str) -> DataSource:
    """The registered source `name`, or the one-line ConfigError config validation gives."""
    found = SOURCES.get(name)
    if found is None:
        raise ConfigError(f"data.source={name!r} is not allowed: one of {', '.join(SOURCE_NAMES)}")
    return found


def check_source(data: DataConfig) -> None:
    """The source checks of config validation: a known `data.source`, and `data.path` where
    the source needs one; one-line ConfigErrors worded as `config.py`'s own."""
    source = data_source(data.source)
    if source.path_required and not data.path:
        raise ConfigError(f"data.path={data.path!r} is not allowed: {source.path_required}")


def load_source(data: DataConfig, seed: int) -> SourceRows:
    """Read the configured source (`data.source`) into pairs and extra distractor answers."""
    return data_source(data.source).load(data, seed)


def source_fingerprint(data: DataConfig) -> dict[str, Any]:
    """The config the split reads, plus what identifies the source's content on disk.

    Only the keys of the configured source enter, so changing e.g. `hub_id` while reading
    WordNet never re-splits; a local file's size and mtime enter, so an edited file misses.
    """
    keys: dict[str, Any] = {
        "source": data.source,
        "max_rows": data.max_rows,
        "num_train": data.num_train,
        "num_dev": data.num_dev,
        "num_eval": data.num_eval,
        "corpus_size": data.corpus_size,
    }
    return keys | data_source(data.source).fingerprint(data)


def describe_source(data: DataConfig) -> str:
    """`<source>` or `<source> (<detail>)` (the file, the data set id), for model cards."""
    detail = data_source(data.source).describe(data)
    return f"{data.source} ({detail})" if detail else data.source
