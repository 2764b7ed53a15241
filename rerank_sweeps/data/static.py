"""Static miners: `mining.model_id=static:<model id>` distils a model2vec static embedding.

The distilled model is built once per teacher under `models_home()` and mines in seconds.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from rerank_sweeps.cache import build_atomically, models_home
from rerank_sweeps.config import UserError
from rerank_sweeps.models import first_line, hub_unavailable, resolve_model

log = logging.getLogger(__name__)

STATIC_PREFIX = "static:"
STATIC_DISTILL_VERSION = 1
STATIC_PCA_DIMS = 256


def static_model_dir(model_id: str) -> Path:
    """Where the static embedding distilled from `model_id` is kept (under models_home())."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "--", model_id)
    return models_home() / f"static-v{STATIC_DISTILL_VERSION}-pca{STATIC_PCA_DIMS}-{name}"


def _is_distilled(folder: Path) -> bool:
    return (folder / "modules.json").is_file()


def distill_static(model_id: str) -> Path:
    """Distil a model2vec static embedding from `model_id` once (locked) and return its folder.

    The teacher runs in bfloat16 (faster than float32 on CPUs with native bf16 and on GPUs);
    its token embeddings are PCA-reduced afterwards, so the precision loss is noise.
    """
    target = static_model_dir(model_id)

    def distill(tmp: Path) -> None:
        try:
            import torch
            from model2vec.distill import distill_from_model
            from sentence_transformers import SentenceTransformer
            from sentence_transformers.models import StaticEmbedding
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise UserError(
                f"mining.model_id={STATIC_PREFIX}{model_id} needs model2vec: "
                f"pip install 'model2vec[distill]' ({first_line(err)})"
            ) from None
        source = resolve_model(model_id)
        started = time.perf_counter()
        try:
            teacher = AutoModel.from_pretrained(source, dtype=torch.bfloat16)
            tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
        except OSError as err:
            raise hub_unavailable(model_id, err) from None
        static = distill_from_model(
            model=teacher,
            tokenizer=tokenizer,
            pca_dims=STATIC_PCA_DIMS,
            quantize_to="float32",
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
        weights = torch.from_numpy(static.embedding).contiguous()
        module = StaticEmbedding(static.tokenizer, embedding_weights=weights, base_model=model_id)
        SentenceTransformer(modules=[module], device="cpu").save(str(tmp))
        log.info("distilled %s into %s in %.1fs", model_id, target, time.perf_counter() - started)

    build_atomically(target, _is_distilled, distill)
    return target
