"""Question/answer data: sources, the leakage-free split, and hard-negative mining.

One module per job: `records` (the records, `normalize`, `answer_key`), `registry` (the
source names -> readers table), one module per source (`wordnet`, `pydoc`, `hub`, `local`),
`split` (the split stage), `mining` and `retriever` (the two miners), `static` (static
miners distilled once), `negatives` (the negatives stage) and `files` (their JSON-lines
files). This face re-exports what the rest of the package uses.
"""

from rerank_sweeps.data.hub import read_hub
from rerank_sweeps.data.local import read_local
from rerank_sweeps.data.mining import MinedRows, load_miner, mine_negatives
from rerank_sweeps.data.negatives import (
    NEGATIVES_VERSION,
    load_negatives,
    miner_config,
    negatives_stage,
)
from rerank_sweeps.data.pydoc import read_pydocs
from rerank_sweeps.data.registry import (
    SOURCE_NAMES,
    SOURCES,
    DataSource,
    check_source,
    data_source,
    describe_source,
    load_source,
    source_fingerprint,
)
from rerank_sweeps.data.retriever import distractor_rows, mine_from_retriever
from rerank_sweeps.data.rows import (
    Doc,
    EvalQuery,
    Negatives,
    NTuple,
    QAPair,
    SourceRows,
    Split,
    answer_key,
    normalize,
)
from rerank_sweeps.data.split import SPLIT_VERSION, load_split, make_split, split_stage
from rerank_sweeps.data.static import STATIC_PREFIX, distill_static, static_model_dir
from rerank_sweeps.data.wordnet import (
    WORDNET_DEFAULT,
    lemma_in_example,
    parse_wordnet_line,
    read_wordnet,
    wordnet_folder,
)

__all__ = [
    "NEGATIVES_VERSION",
    "SOURCES",
    "SOURCE_NAMES",
    "SPLIT_VERSION",
    "STATIC_PREFIX",
    "WORDNET_DEFAULT",
    "DataSource",
    "Doc",
    "EvalQuery",
    "MinedRows",
    "NTuple",
    "Negatives",
    "QAPair",
    "SourceRows",
    "Split",
    "answer_key",
    "check_source",
    "data_source",
    "describe_source",
    "distill_static",
    "distractor_rows",
    "lemma_in_example",
    "load_miner",
    "load_negatives",
    "load_source",
    "load_split",
    "make_split",
    "mine_from_retriever",
    "mine_negatives",
    "miner_config",
    "negatives_stage",
    "normalize",
    "parse_wordnet_line",
    "read_hub",
    "read_local",
    "read_pydocs",
    "read_wordnet",
    "source_fingerprint",
    "split_stage",
    "static_model_dir",
    "wordnet_folder",
]
