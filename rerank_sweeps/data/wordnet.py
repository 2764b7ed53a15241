"""The WordNet source (`data=wordnet`): Debian's wordnet-base, every sense with an example.

A sense becomes `what does "WORD" mean in "EXAMPLE"?` -> its definition when one of its
lemmas (or a simple inflection of it) occurs in one of its examples; the definitions of the
other senses are kept as distractor answers.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_sweeps.config import DataConfig, UserError
from rerank_sweeps.data.rows import SourceRows

WORDNET_DEFAULT = Path("/usr/share/wordnet")
WORDNET_POS = ("noun", "verb", "adj", "adv")

_ADJ_MARKER = re.compile(r"\([a-z]+\)$")
_QUOTED = re.compile(r'"([^"]+)"')
# Simple inflections: a word matches a lemma word that is a prefix of it (after dropping a
# final e/y, as in breathe -> breathing, carry -> carried) followed by at most four letters.
_MAX_SUFFIX = 4


@dataclass(frozen=True)
class WordNetSynset:
    """The parts of one line of a WordNet data.* file that the task uses."""

    offset: str
    pos: str
    lemmas: list[str]
    definition: str
    examples: list[str]


def parse_wordnet_line(line: str) -> WordNetSynset | None:
    """Parse one data.{noun,verb,adj,adv} line; None for licence header lines and blank lines."""
    if not line.strip() or line.startswith("  "):
        return None
    head, sep, gloss = line.partition(" | ")
    if not sep:
        return None
    fields = head.split()
    offset, pos, word_count = fields[0], fields[2], int(fields[3], 16)
    words = fields[4 : 4 + 2 * word_count : 2]
    lemmas = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in words]
    gloss = gloss.strip()
    definition, quote, rest = gloss.partition('"')
    definition = definition.strip().rstrip(";").strip()
    examples = [e.strip() for e in _QUOTED.findall(quote + rest)] if quote else []
    return WordNetSynset(offset, pos, lemmas, definition, [e for e in examples if e])


def _word_pattern(word: str, irregular: Iterable[str]) -> str:
    stem = word[:-1] if len(word) > 3 and word[-1] in "ey" else word
    forms = [re.escape(stem) + rf"\w{{0,{_MAX_SUFFIX}}}"]
    forms += [re.escape(form) for form in irregular]
    return "(?:" + "|".join(forms) + ")"


def lemma_in_example(
    lemma: str, example: str, irregular: dict[str, list[str]] | None = None
) -> bool:
    """Whether `lemma` (or a simple inflection of each of its words) occurs in `example`."""
    irregular = irregular or {}
    words = lemma.lower().split()
    if not words:
        return False
    parts = [_word_pattern(w, irregular.get(w, [])) for w in words]
    pattern = r"(?<!\w)" + r"[\s\-]+".join(parts) + r"(?!\w)"
    return re.search(pattern, example.lower()) is not None


def wordnet_question(
    synset: WordNetSynset, irregular: dict[str, list[str]] | None = None
) -> str | None:
    """`what does "WORD" mean in "EXAMPLE"?` for the first example that contains a lemma."""
    for example in synset.examples:
        for lemma in synset.lemmas:
            if lemma_in_example(lemma, example, irregular):
                return f'what does "{lemma}" mean in "{example}"?'
    return None


def _irregular_forms(folder: Path) -> dict[str, list[str]]:
    # WordNet's exception lists (ran -> run, mice -> mouse): base form -> inflected forms.
    forms: dict[str, list[str]] = defaultdict(list)
    for pos in WORDNET_POS:
        exc = folder / f"{pos}.exc"
        if not exc.is_file():
            continue
        for line in exc.read_text(encoding="utf-8", errors="replace").splitlines():
            inflected, *bases = line.split()
            for base in bases:
                forms[base.replace("_", " ")].append(inflected.replace("_", " "))
    return forms


def wordnet_folder(path: str | None) -> Path:
    """The WordNet dictionary folder (`data.path` or Debian's), or a one-line UserError."""
    folder = Path(path).expanduser() if path else WORDNET_DEFAULT
    if not all((folder / f"data.{pos}").is_file() for pos in WORDNET_POS):
        raise UserError(
            f"WordNet 3.0 data files (data.noun, data.verb, data.adj, data.adv) not found in "
            f"{folder}: run `apt-get install wordnet-base` or set data.path to the dictionary folder"
        )
    return folder


def read_wordnet(folder: Path, max_rows: int | None = None, seed: int = 0) -> SourceRows:
    """Pairs from every synset with a usable example; definitions of the others as distractors.

    `max_rows` takes a seeded random sample of synsets: the files are ordered by part of speech
    and topic, so their first rows would be a biased slice.
    """
    irregular = _irregular_forms(folder)
    synsets: list[WordNetSynset] = []
    for pos in WORDNET_POS:
        with (folder / f"data.{pos}").open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                synset = parse_wordnet_line(line)
                if synset is not None:
                    synsets.append(synset)
    if max_rows is not None and max_rows < len(synsets):
        chosen = sorted(random.Random(seed).sample(range(len(synsets)), max_rows))
        synsets = [synsets[i] for i in chosen]
    rows = SourceRows(pairs=[], rows_read=len(synsets))
    for synset in synsets:
        if not synset.definition:
            rows.skipped["empty definition"] += 1
            continue
        question = wordnet_question(synset, irregular) if synset.examples else None
        if question is None:
            if synset.examples:
                rows.skipped["no lemma in any example (kept as distractor)"] += 1
            rows.extra_answers.append(synset.definition)
        else:
            rows.pairs.append((question, synset.definition))
    return rows


def load(data: DataConfig, seed: int) -> SourceRows:
    """The configured WordNet folder's rows (the registry's reader for `wordnet`)."""
    return read_wordnet(wordnet_folder(data.path), data.max_rows, seed)


def fingerprint(data: DataConfig) -> dict[str, Any]:
    """The folder and the sizes of its data files: an updated WordNet re-splits."""
    folder = wordnet_folder(data.path)
    return {
        "path": str(folder.resolve()),
        "files": {pos: (folder / f"data.{pos}").stat().st_size for pos in WORDNET_POS},
    }
