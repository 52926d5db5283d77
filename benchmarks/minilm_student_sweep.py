"""Prototype sweep of MiniLM students: which start, objective and size reach the teacher.

Trains one student of all-MiniLM-L6-v2 on the recipe's offline corpus and prints its mean
cosine and pairwise-similarity Spearman to the fp32 teacher on the recipe's held-out
sentences (the same 128 ``examples/minilm.toml`` evaluates on), before and after training.
A fast stand-in for a 20-minute recipe run, to compare levers on a subset:

- ``--layers 0,3,5``: which teacher layers the student keeps (its initialisation);
- ``--ffn 768``: FFN width kept in each layer (neurons ranked by weight magnitude);
- ``--hidden W``: weight of a per-layer hidden-state MSE (student layer i against teacher
  hidden state ``--targets``[i], padding masked); the teacher then runs every step;
- ``--pairwise W``: weight of an in-batch similarity-matrix MSE (targets Spearman);
- ``--relations W``: weight of MiniLMv2's self-attention relation loss (Wang et al. 2021):
  KL divergence between the teacher's and the student's last-layer query-query, key-key and
  value-value relations (softmax of scaled dot products per head, padding masked); the
  teacher then runs every step.

    PYTHONPATH=$PWD python benchmarks/minilm_student_sweep.py --layers 0,4,5 --train 2000
    PYTHONPATH=$PWD python benchmarks/minilm_student_sweep.py --layers 0,4,5 --epochs 0

(``--epochs 0``: the untrained student only.) ``--train`` above the corpus's 9,825
training sentences takes them all, as the recipe does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgepack.compress.distill import embedding_loss
from edgepack.compress.layer_students import narrow_ffn, student_keeping_layers
from edgepack.compress.token_batches import length_grouped_loader, outputs_by_length
from edgepack.zoo.minilm import minilm_embedder, minilm_sentences
from edgepack.bench.embedding_quality import embedding_quality


def keep_layers(teacher: nn.Module, layers: list[int], ffn: int) -> nn.Module:
    """The recipe's student: ``layers`` of the teacher, each FFN cut to ``ffn`` neurons
    (0: kept whole), as ``distill``'s ``teacher-layers`` init and ``ffn_width`` make it."""
    student = student_keeping_layers(teacher, layers)
    if ffn:
        narrow_ffn(student, ffn)
    return student


@torch.no_grad()
def quality(model: nn.Module, inputs, reference) -> dict:
    model.eval()
    out = outputs_by_length(model, inputs).numpy()
    q = embedding_quality(out, reference)
    return {"cosine": round(q["mean_cosine"], 4), "spearman": round(q["spearman"], 4)}


def hidden_states(model: nn.Module, ids, mask):
    """Per-layer hidden states and the mean-pooled embedding of a SentenceEmbedder."""
    out = model.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    m = mask.unsqueeze(-1).to(out[0].dtype)
    return out.hidden_states, (out[0] * m).sum(1) / m.sum(1).clamp(min=1e-9)


def masked_mse(a, b, mask):
    m = mask.unsqueeze(-1).to(a.dtype)
    return (((a - b) ** 2) * m).sum() / (m.sum() * a.shape[-1])


def pairwise_loss(s, t):
    s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    return F.mse_loss(s @ s.T, t @ t.T)


class LastLayerQKV:
    """Captures the query, key and value projections of a model's last encoder layer."""

    def __init__(self, model: nn.Module):
        attention = model.encoder.encoder.layer[-1].attention.self
        self.heads = attention.num_attention_heads
        self.values: dict[str, torch.Tensor] = {}
        for name in ("query", "key", "value"):
            getattr(attention, name).register_forward_hook(self._keep(name))

    def _keep(self, name):
        def hook(_module, _inputs, output):
            self.values[name] = output
        return hook


def relation_log_probs(x, heads: int, mask):
    """log softmax over keys of x x^T / sqrt(d) per head: (batch, heads, seq, seq)."""
    b, t, width = x.shape
    d = width // heads
    x = x.view(b, t, heads, d).transpose(1, 2)
    scores = x @ x.transpose(-1, -2) / d ** 0.5
    scores = scores.masked_fill(~mask[:, None, None, :].bool(), float("-inf"))
    return F.log_softmax(scores, dim=-1)


def relation_loss(student_qkv: LastLayerQKV, teacher_qkv: LastLayerQKV, mask):
    """MiniLMv2's loss: KL(teacher || student) of the Q-Q, K-K and V-V relations, averaged
    over heads and the real (unpadded) query positions."""
    rows = mask.bool()
    total = 0.0
    for name in ("query", "key", "value"):
        t = relation_log_probs(teacher_qkv.values[name], teacher_qkv.heads, mask)
        s = relation_log_probs(student_qkv.values[name], student_qkv.heads, mask)
        t_prob = t.exp()
        kl = (t_prob * (t - s)).masked_fill(t_prob == 0, 0.0).sum(-1)   # (b, heads, seq)
        total = total + kl.mean(1)[rows].mean()
    return total / 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", default="0,2,4")
    ap.add_argument("--ffn", type=int, default=0)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=float, default=0.0)
    ap.add_argument("--targets", default="", help="teacher hidden-state index per student "
                    "layer (default: the output of the layer each one was copied from)")
    ap.add_argument("--pairwise", type=float, default=0.0)
    ap.add_argument("--relations", type=float, default=0.0)
    ap.add_argument("--packages", default="", help="comma-separated installed packages whose "
                    "docstrings join the training text (evaluation stays on the base corpus's "
                    "held-out sentences)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = [int(x) for x in args.layers.split(",")]
    targets = [int(x) for x in args.targets.split(",")] if args.targets else \
        [i + 1 for i in layers]
    data = minilm_sentences(train_sentences=args.train, eval_sentences=128, max_length=128,
                            train_max_length=48, batch_size=args.batch)
    train, held_out = data["train"].inputs, data["evaluation"].inputs
    if args.packages:
        train = minilm_sentences(train_sentences=args.train, eval_sentences=128, max_length=128,
                                 train_max_length=48, batch_size=args.batch,
                                 packages=args.packages.split(","))["train"].inputs
    print("training sentences", len(train[0]), flush=True)
    teacher = minilm_embedder().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    reference = outputs_by_length(teacher, held_out).numpy()
    student = keep_layers(teacher, layers, args.ffn)
    student.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    result = {"args": vars(args), "untrained": quality(student, held_out, reference)}
    print("untrained", result["untrained"], flush=True)
    if args.epochs == 0:   # the untrained student alone
        print(json.dumps(result))
        return
    if args.relations:
        student_qkv, teacher_qkv = LastLayerQKV(student), LastLayerQKV(teacher)
    precomputed = outputs_by_length(teacher, train)
    loader = length_grouped_loader(train, precomputed, batch_size=args.batch)
    steps = args.epochs * len(loader)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        torch.manual_seed(epoch)
        student.train()
        for ids, mask, target in loader:
            if args.hidden:
                s_states, s_emb = hidden_states(student, ids, mask)
                with torch.no_grad():
                    t_states, _ = hidden_states(teacher, ids, mask)
                loss = embedding_loss(s_emb, target) + args.hidden * sum(
                    masked_mse(s_states[i + 1], t_states[t], mask)
                    for i, t in enumerate(targets)) / len(targets)
            else:
                s_emb = student(ids, mask)
                loss = embedding_loss(s_emb, target)
            if args.pairwise:
                loss = loss + args.pairwise * pairwise_loss(s_emb, target)
            if args.relations:
                with torch.no_grad():
                    teacher(ids, mask)
                loss = loss + args.relations * relation_loss(student_qkv, teacher_qkv, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        result[f"epoch {epoch + 1}"] = quality(student, held_out, reference)
        print(f"epoch {epoch + 1}", result[f"epoch {epoch + 1}"],
              f"{time.perf_counter() - started:.0f} s", flush=True)
    result["train_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
