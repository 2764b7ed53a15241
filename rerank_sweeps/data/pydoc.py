"""Question/answer pairs from the docstrings of Python's standard library (`data=pydoc`).

Every public module, class and function docstring whose first paragraph is a short summary
and which says more after it becomes one pair: the summary is the question and the rest of
the docstring is the answer. A private name's docstring that would make such a pair is also
a training-only pair (`data.train_private`): real text of the same kind, though not what a
user of the library asks about. The bodies of the docstrings that make no pair (private
names, summaries too short or too long) are kept as distractor answers. The files are parsed with `ast`, never
imported, so any folder of Python sources works; the default is Debian's /usr/lib/python3.11
(libpython3.11-minimal and libpython3.11-stdlib), else the running interpreter's stdlib.
The texts are CPython's, under the PSF License Agreement (see NOTICE-PYTHON).
"""

from __future__ import annotations

import ast
import os
import random
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_sweeps.config import DataConfig, UserError
from rerank_sweeps.data.rows import SourceRows

PYDOC_DEFAULT = Path("/usr/lib/python3.11")
PYDOC_VERSION = 2  # enters the split key: bump when the rules below change what is read
# Folders never read: test suites (their docstrings describe tests, not the library), installed
# third-party packages and byte-code caches. Matched against every folder name on the way down.
SKIPPED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)
MIN_SUMMARY_WORDS = 4
MAX_SUMMARY_WORDS = 40
MIN_BODY_WORDS = 8
MAX_ANSWER_CHARS = 1000

_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
# The fields that hold statement lists, in source order (try: body, except, else, finally);
# definitions live only there, so expressions are never walked.
_BLOCKS = ("body", "handlers", "orelse", "finalbody", "cases")


@dataclass(frozen=True)
class _Docstring:
    """One docstring found in a file (or, with `docstring` None, a file that did not parse)."""

    docstring: str | None
    private: bool = False


def pydoc_folder(path: str | None) -> Path:
    """The source folder (`data.path`, else /usr/lib/python3.11, else this Python's stdlib)."""
    if path:
        folder = Path(path).expanduser()
    elif PYDOC_DEFAULT.is_dir():
        folder = PYDOC_DEFAULT
    else:
        folder = Path(sysconfig.get_paths()["stdlib"])
    if not folder.is_dir():
        raise UserError(
            f"Python source folder {folder} not found: run `apt-get install "
            "libpython3.11-stdlib` or set data.path to a folder of .py files"
        )
    return folder


def pydoc_files(folder: Path) -> list[Path]:
    """The .py files under `folder`, sorted by relative path, outside `SKIPPED_DIRS`."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS]
        found.extend(Path(dirpath, f) for f in filenames if f.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def pydoc_fingerprint(folder: Path) -> dict[str, Any]:
    """The folder's identity, cheaply: its path, name (the version), .py file count and size."""
    files = pydoc_files(folder)
    return {
        "path": str(folder.resolve()),
        "version": folder.resolve().name,
        "reader": PYDOC_VERSION,
        "py_files": len(files),
        "py_bytes": sum(f.stat().st_size for f in files),
    }


def _is_private(name: str) -> bool:
    return name.startswith("_")


def _module_name(relative: Path) -> list[str]:
    parts = list(relative.with_suffix("").parts)
    if parts and parts[-1] == "__init__":  # a package's docstring: named by its folder
        parts.pop()
    return parts


def _file_docstrings(path: Path, folder: Path) -> Iterator[_Docstring]:
    """The docstrings of one file in source order: the module's, then each definition's."""
    relative = path.relative_to(folder)
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for invalid escapes in old code
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes(), filename=str(relative))
    except (SyntaxError, ValueError, OSError):  # ValueError: undecodable bytes, NUL bytes
        yield _Docstring(None)
        return
    module_private = any(_is_private(p) for p in _module_name(relative))
    module_doc = ast.get_docstring(tree, clean=True)
    if module_doc is not None:
        yield _Docstring(module_doc, module_private)
    yield from _definitions(tree, module_private)


def _definitions(node: ast.AST, private: bool) -> Iterator[_Docstring]:
    # Depth first in source order, through if/try/with/match blocks; a private class or
    # function makes everything defined inside it private too.
    children = [c for f in _BLOCKS if isinstance(b := getattr(node, f, None), list) for c in b]
    for child in children:
        if isinstance(child, _DEFINITIONS):
            inner_private = private or _is_private(child.name)
            doc = ast.get_docstring(child, clean=True)
            if doc is not None:
                yield _Docstring(doc, inner_private)
            yield from _definitions(child, inner_private)
        else:
            yield from _definitions(child, private)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _truncate(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    """`text` cut to at most `limit` characters at a word boundary."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    cut = head.rfind(" ")
    return text[:cut].rstrip() if cut > 0 else text[:limit]


def docstring_pair(docstring: str) -> tuple[str, str, str | None]:
    """(question, answer, why it is no pair or None) from a cleaned docstring.

    The question is the first paragraph and the answer the rest, both whitespace-collapsed,
    the answer cut to `MAX_ANSWER_CHARS` at a word boundary; the answer is "" when the body
    is missing or too short to stand as a document.
    """
    summary, _, body = docstring.strip().partition("\n\n")
    question, answer = _collapse(summary), _collapse(body)
    if not answer:
        return question, "", "no body after the summary"
    if len(answer.split()) < MIN_BODY_WORDS:
        return question, "", f"body under {MIN_BODY_WORDS} words"
    answer = _truncate(answer)
    words = len(question.split())
    if words < MIN_SUMMARY_WORDS:
        return question, answer, f"summary under {MIN_SUMMARY_WORDS} words"
    if words > MAX_SUMMARY_WORDS:
        return question, answer, f"summary over {MAX_SUMMARY_WORDS} words"
    return question, answer, None


def read_pydocs(
    folder: Path, max_rows: int | None = None, seed: int = 0, train_private: bool = False
) -> SourceRows:
    """Pairs from the public docstrings of the .py files under `folder` (see the module docs).

    A row is one docstring, or one file that does not parse (skipped, never fatal), so
    `rows_read == len(pairs) + sum(skipped.values())`. With `train_private`, a private
    name's docstring that makes a pair is also a training-only pair (its body stays a
    distractor, so with `num_train` the public questions can fill, the option changes no eval
    query, dev question or corpus document). Bodies of skipped docstrings that are long enough (private names, summaries too short or
    too long) become distractor answers, as WordNet's unusable senses do. `max_rows` takes a
    seeded random sample of those rows, kept in file order, as `read_wordnet` does: the
    sorted files would otherwise give a slice of the alphabet.
    """
    found = [doc for path in pydoc_files(folder) for doc in _file_docstrings(path, folder)]
    if max_rows is not None and max_rows < len(found):
        chosen = sorted(random.Random(seed).sample(range(len(found)), max_rows))
        found = [found[i] for i in chosen]
    rows = SourceRows(pairs=[], rows_read=len(found))
    for doc in found:
        if doc.docstring is None:
            rows.skipped["file does not parse"] += 1
            continue
        question, answer, reason = docstring_pair(doc.docstring)
        if doc.private and reason is None and train_private:
            rows.train_pairs.append((question, answer))
        if doc.private:
            reason = "private name"
        if reason is None:
            rows.pairs.append((question, answer))
        elif answer:  # a real body under an unusable summary or a private name: a distractor
            rows.skipped[f"{reason} (body kept as distractor)"] += 1
            rows.extra_answers.append(answer)
        else:
            rows.skipped[reason] += 1
    return rows


def load(data: DataConfig, seed: int) -> SourceRows:
    """The configured folder's rows (the registry's reader for `pydoc`)."""
    return read_pydocs(pydoc_folder(data.path), data.max_rows, seed, data.train_private)


def fingerprint(data: DataConfig) -> dict[str, Any]:
    """The folder's identity (`pydoc_fingerprint`): another Python version re-splits."""
    return pydoc_fingerprint(pydoc_folder(data.path)) | {"train_private": data.train_private}
