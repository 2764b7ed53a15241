"""What the rest of the package needs from a reranker architecture.

An architecture is one module under `rerank_sweeps/archs/` with a subclass of `Architecture`
(its declarations and its training, scoring and export hooks) and a subclass of
`rerankers.ModelReranker` (its LanceDB reranker), registered in `rerank_sweeps/archs/__init__.py`
and chosen by `conf/arch/<name>.yaml`'s `name`. Training (`train.py`), the LanceDB reranker
(`archs.load_reranker`), the dev signal, distillation, the speed-ups, the inference backends
and latency call these hooks and never compare the architecture's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pathlib import Path

    from rerank_sweeps.config import RunConfig
    from rerank_sweeps.data import NTuple
    from rerank_sweeps.distill_data import TeacherScores
    from rerank_sweeps.rerankers import ModelReranker
    from rerank_sweeps.speedups import Optimization


def features_module(model: Any, attr: str, output: Any) -> tuple[Any, str]:
    """An nn.Module of (input_ids, attention_mask[, token_type_ids]) returning
    `output(model, features)`, for export: `model` is its submodule `attr`, so the export's
    name scopes start with `attr + "."` (returned too)."""
    import torch

    class FeaturesModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            setattr(self, attr, model)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            return output(getattr(self, attr), features)

    return FeaturesModule().eval(), attr + "."


class Architecture:
    """One reranker architecture: its declarations (class attributes) and its hooks."""

    name: ClassVar[str]  # `arch.name`: conf/arch/<name>.yaml and reranker.json's "arch"
    title: ClassVar[str]  # for people: model cards, the console
    loader: ClassVar[str]  # how a user loads the saved `model/` directory
    losses: ClassVar[tuple[str, ...]]  # `arch.loss` values; the first is the default
    teacher_losses: ClassVar[tuple[str, ...]] = ()  # those that learn a teacher's scores
    # ArchConfig fields only this architecture reads (left out of the others' cache keys).
    own_fields: ClassVar[tuple[str, ...]] = ()
    # ArchConfig fields saved with the model (its tokenisation and shape): they are in the
    # untrained model's cache key, its card and the latency records.
    saved_fields: ClassVar[tuple[str, ...]] = ("max_length",)
    # reranker.json fields besides max_length that its model card and latency records show.
    card_fields: ClassVar[tuple[str, ...]] = ()
    # BaseConfig field naming a pretrained reranker of this architecture (init=pretrained);
    # None: there is none to start from.
    pretrained_field: ClassVar[str | None] = None
    # Whether CUDA graphs capture this architecture's forward pass (the `graphs` speed-up).
    supports_graphs: ClassVar[bool] = False

    def loss_name(self, conf: RunConfig) -> str:
        """`arch.loss`, null meaning the default (the first of `losses`)."""
        return conf.arch.loss or self.losses[0]

    # -- the model ---------------------------------------------------------------------------
    def reranker_class(self) -> type[ModelReranker]:
        """The LanceDB reranker of a saved model of this architecture."""
        raise NotImplementedError

    def load_start_model(self, path: str, conf: RunConfig, local_only: bool) -> Any:
        """The model training starts from (`path`: a local directory or a hub id)."""
        raise NotImplementedError

    def detect(self, path: Path) -> bool:
        """Whether a local model directory (not one of our artifacts) holds this architecture."""
        return False

    # -- training ----------------------------------------------------------------------------
    def input_tuples(self, conf: RunConfig, rows: Sequence[NTuple]) -> list[NTuple]:
        """Training or dev tuples as the model reads them (the texts as they are here)."""
        del conf
        return list(rows)

    def tuple_evaluator(self, rows: Sequence[NTuple], name: str, at_k: int) -> Any:
        """The dev evaluator over mined tuples (positive + hard negatives per question), used
        when a model is trained without the dev candidates."""
        raise NotImplementedError

    def training_arguments(self, conf: RunConfig, common: dict[str, Any]) -> Any:
        """The library's TrainingArguments from the settings both trainers share."""
        raise NotImplementedError

    def dataset_and_loss(
        self,
        conf: RunConfig,
        model: Any,
        train: Sequence[NTuple],
        teacher_scores: TeacherScores | None,
    ) -> tuple[Any, Any]:
        """The training dataset and the library loss of `arch.loss`."""
        raise NotImplementedError

    def trainer(self, **kwargs: Any) -> Any:
        """The library trainer (model, args, train_dataset, loss, evaluator, callbacks)."""
        raise NotImplementedError

    # -- fast inference ----------------------------------------------------------------------
    def lean_scorer(
        self, model: Any, device: str, opt: Optimization, batch_size: int, sort_batch_size: int
    ) -> Any:
        """A callable (queries, texts) -> float32 scores equal to the reranker's, with `opt`."""
        raise NotImplementedError

    def export_module(self, model: Any) -> tuple[Any, str]:
        """(an nn.Module of (input_ids, attention_mask[, token_type_ids]) -> what the lean
        scorer's forward returns, the attribute prefix of its submodules in an export)."""
        raise NotImplementedError

    def sample_features(self, model: Any, queries: list[str], texts: list[str]) -> Any:
        """Features tokenised as scoring does, for export checks."""
        raise NotImplementedError

    def backbone(self, model: Any) -> Any:
        """The module whose transformer Linear layers int8 quantises (the head stays fp32)."""
        raise NotImplementedError

    def hf_config(self, model: Any) -> Any:
        """The transformers config of the model's backbone."""
        return self.backbone(model).config

    def runner_forward(self, runner: Any) -> Any:
        """The lean scorer's `forward`, run by an exported model (`backends.Runner`)."""
        raise NotImplementedError
