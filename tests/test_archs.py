"""Architectures as units: the registry, the rule that nothing outside `rerank_sweeps/archs/`
branches on an architecture's name, and a toy architecture added the documented way (a
module, a registry entry, a YAML) running through the real pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, compose_config

from rerank_sweeps import archs
from rerank_sweeps.archs import Architecture, get_arch, load_reranker
from rerank_sweeps.config import ConfigError, UserError
from rerank_sweeps.rerankers import ModelReranker
from rerank_sweeps.validation import validate

NAME_COMPARISON = re.compile(r"(==|!=| in ) *\(?['\"](ce|colbert)['\"]")


def test_no_module_outside_the_architectures_compares_their_names():
    offenders = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sorted((REPO / "rerank_sweeps").rglob("*.py"))
        if "archs" not in path.relative_to(REPO / "rerank_sweeps").parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if NAME_COMPARISON.search(line)
    ]
    assert offenders == []


def test_the_registry_names_its_choices():
    assert set(archs.arch_names()) >= {"ce", "colbert"}
    assert get_arch("colbert").loader == "pylate.models.ColBERT(path)"
    with pytest.raises(UserError, match=r"arch='nope' is not an architecture: one of ce, colbert"):
        get_arch("nope")
    cfg = compose_config(["experiment=tiny", "arch.name=colbrt"])
    with pytest.raises(ConfigError, match="arch.name"):
        validate(cfg)


# -- a toy architecture: the score of a pair is the share of query words in the text -------


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def overlap(query: str, text: str) -> float:
    """The toy model: how many of the query's words the text contains, as a share."""
    words = _words(query)
    return len(words & _words(text)) / max(1, len(words))


class _CardData:
    def set_evaluation_metrics(self, *args: Any, **kwargs: Any) -> None:
        """Dev evaluators record their metrics in the model card (sentence-transformers)."""


class ToyModel:
    """A model with nothing to learn; `save` writes what a model directory needs."""

    device = "cpu"
    model_card_data = _CardData()

    def save(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "toy.json").write_text(json.dumps({"kind": "word overlap"}))


class ToyReranker(ModelReranker):
    """The toy architecture's LanceDB reranker."""

    @property
    def model(self) -> Any:  # nothing to load; devsignal may also set it on the instance
        return self.__dict__.get("model", ToyModel())

    def _score_pairs(self, queries: list[str], texts: list[str]) -> np.ndarray:
        return np.array([overlap(q, t) for q, t in zip(queries, texts, strict=True)])


class ToyArch(Architecture):
    name = "toy"
    title = "word-overlap toy"
    loader = "nothing to load"
    losses = ("none",)

    def reranker_class(self) -> type[ModelReranker]:
        return ToyReranker

    def load_start_model(self, path: str, conf: Any, local_only: bool) -> Any:
        return ToyModel()


@pytest.fixture
def toy_conf_dir(tmp_path, monkeypatch) -> Path:
    """The toy registered and its YAML in a user config folder ($RERANK_SWEEPS_CONF)."""
    monkeypatch.setitem(archs.ARCHITECTURES, "toy", ToyArch())
    conf_dir = tmp_path / "conf"
    (conf_dir / "arch").mkdir(parents=True)
    (conf_dir / "arch" / "toy.yaml").write_text("name: toy\n")
    monkeypatch.setenv("RERANK_SWEEPS_CONF", str(conf_dir))
    return conf_dir


def test_a_toy_architecture_runs_through_the_pipeline(toy_conf_dir, tmp_path):
    from rerank_sweeps.pipeline import run

    cfg = compose_config(
        [
            "experiment=tiny",
            "arch=toy",
            f"paths.root={tmp_path / 'out'}",
            "epochs=0",
            # Measured in a fresh process, which registers the toy again from this file.
            "latency.devices=[cpu]",
            "latency.optimizations=[fp32]",
            "rerank.fusion=none",
        ]
    )
    result = run(cfg, tmp_path / "run")
    model_art = result.artifacts["model"].path
    meta = json.loads((model_art / "reranker.json").read_text())
    assert meta["arch"] == "toy"
    assert "word-overlap toy" in (model_art / "model" / "README.md").read_text()
    reranker = load_reranker(model_art)
    assert isinstance(reranker, ToyReranker)
    assert reranker.score("red apple", ["an apple", "a red apple", "pear"]).tolist() == [0.5, 1, 0]
    # The evaluation scored its candidates with the toy: shares of query words, not logits.
    scores_seen = [
        value
        for path in (tmp_path / "out").rglob("scores.jsonl")
        for line in path.read_text().splitlines()
        for value in json.loads(line)["scores"]
    ]
    assert scores_seen and all(0.0 <= s <= 1.0 for s in scores_seen)
    assert any(0.0 < s < 1.0 for s in scores_seen)
    assert "reranked" in (tmp_path / "run" / "table.md").read_text()
    latency = json.loads((tmp_path / "run" / "latency.json").read_text())
    toy = latency["devices"]["cpu"]["systems"]["toy"]
    assert toy["latency"] and all(0 <= v <= 1 for v in toy["accuracy"].values())


def _import_graph(inside_functions: bool) -> dict[str, set[str]]:
    """Module -> the package's modules it imports: at its top only, or also inside functions
    and methods (`if TYPE_CHECKING:` blocks never run, so they never count)."""
    import ast

    root = REPO / "rerank_sweeps"
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path

    def owner(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def statements(tree: ast.Module) -> list[ast.AST]:
        if not inside_functions:
            return list(tree.body)
        found, todo = [], list(tree.body)
        while todo:
            node = todo.pop()
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                todo.extend(node.orelse)
                continue
            found.append(node)
            todo.extend(ast.iter_child_nodes(node))
        return found

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in statements(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rerank_sweeps"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                other = owner(str(target))
                # a subpackage's modules import its public face's siblings, not the face
                if other and other != name and not name.startswith(other + "."):
                    found.add(other)
        graph[name] = found
    return graph


def test_module_level_imports_form_no_circle():
    """Imports at the top of the package's modules go one way (see the README's code map)."""
    import graphlib

    graphlib.TopologicalSorter(_import_graph(inside_functions=False)).prepare()


def test_imports_inside_functions_form_no_circle_either():
    """An import inside a function is a dependency all the same: counting those too, the
    layers still go one way (the configuration reaches no registry above it, a low module
    never calls into one that imports it). Raises CycleError naming the circle."""
    import graphlib

    graphlib.TopologicalSorter(_import_graph(inside_functions=True)).prepare()
