"""The saved reranker: `model/` with our section in its model card, and `reranker.json`.

The model card section says what a user needs before deploying the model: where it started,
its data and negatives, its schedule, the input format (with `arch.score_in_input`) and its
dev metrics against the untrained model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rerank_sweeps.archs import get_arch
from rerank_sweeps.config import RunConfig
from rerank_sweeps.data import describe_source
from rerank_sweeps.score_input import META_KEY as SCORE_META_KEY


def save_reranker(
    model: Any,
    out_dir: Path,
    info: dict[str, Any],
    conf: RunConfig,
    num_train: int,
    num_dev: int = 0,
) -> None:
    """Write `model/` (with our section in its model card) and `reranker.json` into `out_dir`."""
    model_dir = out_dir / "model"
    model.save(str(model_dir))
    card = model_dir / "README.md"
    existing = card.read_text(encoding="utf-8") if card.is_file() else ""
    section = model_card_section(info, conf, num_train, num_dev)
    card.write_text(_insert_after_front_matter(existing, section), encoding="utf-8")
    (out_dir / "reranker.json").write_text(json.dumps(info, indent=2))


def _insert_after_front_matter(card: str, section: str) -> str:
    """Our section first (after the YAML metadata), above the libraries' long template."""
    if card.startswith("---\n"):
        end = card.find("\n---\n", 4)
        if end != -1:
            head, rest = card[: end + 5], card[end + 5 :]
            return head + "\n" + section + "\n" + rest.lstrip("\n")
    return section + ("\n" + card if card else "")


def _mined_with(conf: RunConfig) -> str:
    """Where the negatives came from, for the model card."""
    mining = conf.mining
    if mining.source == "retriever":
        legs = " and ".join(
            f"`{conf.index.embedder}`" if leg == "vector" else "BM25" for leg in mining.legs
        )
        drawn = f"{mining.sampling_strategy} of the top {mining.range_max}"
        return f"the first stage's candidates: {legs}, {drawn}"
    return f"mined with `{mining.model_id}`"


def model_card_section(info: dict[str, Any], conf: RunConfig, num_train: int, num_dev: int) -> str:
    """The rerank_sweeps section of the model card: data, negatives, epochs, seed, dev results."""
    arch = get_arch(info["arch"])
    lines = [
        "## rerank_sweeps training run",
        "",
        f"- Reranker: {arch.title}, started from `{info['model_id']}` (init={info['init']}, base={info['base']})",
        f"- Data: source={describe_source(conf.data)}"
        + f"; {num_train} training examples, {num_dev} dev questions",
        f"- Hard negatives per question: {info['negatives']} ({_mined_with(conf)})",
        f"- Epochs: {info['epochs']}; seed: {info['seed']}; lr {conf.arch.lr}, batch {conf.arch.batch_size}",
        f"- Max length: {info['max_length']}"
        + "".join(f"; {name.replace('_', ' ')} {info[name]}" for name in arch.card_fields),
    ]
    if info.get(SCORE_META_KEY):
        lines.append(
            "- Input: each passage starts with its first-stage score, the cosine of query and "
            f"passage under `{info[SCORE_META_KEY]['embedder']}` as an integer percentage: "
            "`71 | passage text` (`rerank_sweeps.archs.load_reranker` formats it)"
        )
    if info.get("teacher"):
        lines.append(
            f"- Distilled ({info.get('loss')}) from the teacher `{json.dumps(info['teacher'])}`"
        )
    if info["dev"] or info["dev_untrained"]:
        lines += ["", "| dev metric | untrained | trained |", "|---|---|---|"]
        for k in sorted(set(info["dev"]) | set(info["dev_untrained"])):
            before = info["dev_untrained"].get(k)
            after = info["dev"].get(k)
            lines.append(
                f"| {k} | {'' if before is None else f'{before:.4f}'} | "
                f"{'' if after is None else f'{after:.4f}'} |"
            )
    else:
        lines += ["", "Untrained: no dev results (this is the starting model, saved as is)."]
    return "\n".join(lines) + "\n"
