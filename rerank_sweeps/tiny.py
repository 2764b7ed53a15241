"""Tiny randomly initialised BERT and ModernBERT, built locally for offline tests.

`tiny-random/bert` and `tiny-random/modernbert` resolve (through `models.resolve_model`) to
sentence-transformers directories under `models_home()`: 2 layers, hidden size 32, a small
WordPiece vocabulary (special tokens, characters, subword pieces and a fixed word list), so any
ASCII text tokenizes without [UNK] floods. Weights come from a fixed seed, so every process
that builds them gets byte-identical models. A build writes into a temp dir and renames it into
place under a file lock (`cache.build_atomically`): parallel test processes build each model
once and never see half of it. `models` lists these ids among its offline builders; this
module imports nothing from `models`, so the two never import each other.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from rerank_sweeps.cache import build_atomically, models_home

TINY_PREFIX = "tiny-random/"
TINY_BERT_ID = TINY_PREFIX + "bert"
TINY_MODERNBERT_ID = TINY_PREFIX + "modernbert"
SEED = 1234
HIDDEN = 32
LAYERS = 2
HEADS = 2
MAX_POSITIONS = 512
# Bump when the recipe changes, so stale builds in a shared models_home are not reused.
RECIPE_VERSION = 1

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Common English words plus the words of the test fixtures: whole-word tokens keep short
# texts short, and everything else falls back to the character pieces below.
WORDS = """
the a an of to in and or is are was were be been it its this that these those what which who
whom whose when where why how does do did can could should would will may might must not no
yes with without for from by on at as into onto over under about between after before during
than then there here one two three four five six seven eight nine ten many much more most
some any each every all both few other another same such only own so too very just also
mean means meaning word words example sense gloss definition question answer text document
query search rank rerank model train test dev eval data set list table index vector hybrid
apple banana cherry grape lemon mango orange peach pear plum berry melon
red green blue yellow black white brown purple pink gray
cat dog horse cow sheep goat bird fish lion tiger bear wolf fox mouse rabbit snake
car bus train boat ship plane bike road street city town village country river lake sea
ocean mountain hill forest tree flower grass leaf rock stone sand water fire air earth sun
moon star sky rain snow wind cloud storm day night morning evening week month year time
house home room door window wall floor roof kitchen bed chair desk book paper pen letter
music song dance game sport ball team player school teacher student class lesson language
food bread cheese milk egg meat rice soup salt sugar tea coffee juice wine beer cake
doctor nurse hospital medicine health body head hand foot eye ear nose mouth heart blood
money bank price market shop work job office company business law court police army war
king queen prince castle church god art paint picture photo film movie story poem
computer phone internet email software program code number math science history
animal plant person people man woman child baby family friend group
good bad big small large little long short high low old new young hot cold warm cool fast
slow hard soft easy early late happy sad strong weak rich poor full empty open close
make made give take get go come see know think say tell ask use find want need like
eat drink run walk swim fly read write speak sing play live die grow cut build break
""".split()


def _vocabulary() -> list[str]:
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    words = sorted(set(WORDS) - set(chars))
    return SPECIAL_TOKENS + chars + pieces + words


def _write_vocab(folder: Path) -> Path:
    path = folder / "vocab.txt"
    path.write_text("\n".join(_vocabulary()) + "\n", encoding="utf-8")
    return path


def _bert_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab_file = _write_vocab(folder)
    # Positional on purpose: transformers 5 silently ignores `vocab_file=` and maps all to [UNK].
    tokenizer = BertTokenizerFast(str(vocab_file), do_lower_case=True)
    expected = len(_vocabulary())
    if len(tokenizer) != expected:
        raise RuntimeError(f"tiny BERT tokenizer has {len(tokenizer)} tokens, expected {expected}")
    return tokenizer


def _wordpiece_fast_tokenizer(folder: Path):
    """A generic fast tokenizer (not BertTokenizerFast) for ModernBERT, built with `tokenizers`."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(_vocabulary())}
    core = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    from tokenizers import decoders

    core.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_POSITIONS,
    )
    if len(tokenizer) != len(vocab):
        raise RuntimeError(
            f"tiny ModernBERT tokenizer has {len(tokenizer)} tokens, not {len(vocab)}"
        )
    return tokenizer


def _bert_model(vocab_size: int):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=2 * HIDDEN,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=0,
    )
    return BertModel(config)


def _modernbert_model(vocab_size: int):
    from transformers import ModernBertConfig, ModernBertModel

    ids = {token: i for i, token in enumerate(_vocabulary())}
    config = ModernBertConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        local_attention=64,
        global_attn_every_n_layers=2,
        pad_token_id=ids["[PAD]"],
        cls_token_id=ids["[CLS]"],
        sep_token_id=ids["[SEP]"],
        bos_token_id=ids["[CLS]"],
        eos_token_id=ids["[SEP]"],
    )
    return ModernBertModel(config)


def _save_sentence_transformer(hf_dir: Path, target: Path) -> None:
    """Wrap a plain HF model dir as a sentence-transformers dir (Transformer + mean pooling)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    transformer = Transformer(str(hf_dir), max_seq_length=MAX_POSITIONS)
    pooling = Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    model.save(str(target))


def _build(name: str, tmp: Path) -> Path:
    """Build tiny model `name` inside the temp folder `tmp`; returns the folder to publish."""
    import torch

    hf_dir = tmp / "hf"
    hf_dir.mkdir(parents=True)
    torch.manual_seed(SEED)
    if name == "bert":
        tokenizer = _bert_tokenizer(hf_dir)
        model = _bert_model(len(tokenizer))
    else:
        tokenizer = _wordpiece_fast_tokenizer(hf_dir)
        (hf_dir / "vocab.txt").unlink(missing_ok=True)
        model = _modernbert_model(len(tokenizer))
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    st_dir = tmp / "model"
    _save_sentence_transformer(hf_dir, st_dir)
    (st_dir / "tiny_recipe.json").write_text(
        json.dumps({"model_id": TINY_PREFIX + name, "seed": SEED, "recipe": RECIPE_VERSION})
    )
    return st_dir


def _is_built(target: Path) -> bool:
    recipe = target / "tiny_recipe.json"
    if not recipe.is_file():
        return False
    return json.loads(recipe.read_text()).get("recipe") == RECIPE_VERSION


def build_tiny(name: str) -> Path:
    """Build (once, under a lock) and return the directory of tiny model `name` (bert|modernbert)."""
    if name not in ("bert", "modernbert"):
        raise ValueError(f"unknown tiny model {name!r}: bert or modernbert")
    target = models_home() / f"tiny-random-{name}-v{RECIPE_VERSION}"
    # A different or broken build in `target` is never trusted: build_atomically replaces it.
    build_atomically(target, _is_built, lambda tmp: _build(name, tmp))
    return target
