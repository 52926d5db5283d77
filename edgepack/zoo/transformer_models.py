"""Transformers users bring: a ViT-tiny-style image classifier written like timm's, and a
Hugging Face BERT classifier built from a ``BertConfig`` (random weights, never downloaded).

The ViT's :class:`Attention` is shaped like timm's: one fused ``qkv`` linear, ``num_heads``
and ``head_dim`` attributes read in ``forward``, a ``proj`` linear; the model has a
``cls_token`` and a learned ``pos_embed`` (bare parameters, not inside any layer). These are
what make attention hard to prune, and what :mod:`edgepack.compress.attention` handles.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection, as timm writes it."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"vit: dim={dim} must be a multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens,
                                                     self.num_heads * self.head_dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT: patchify conv, class token, learned position embedding, blocks, head on the token."""

    def __init__(self, img_size=224, patch_size=16, dim=192, depth=12, num_heads=3,
                 mlp_ratio=4.0, num_classes=1000):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"vit: img_size={img_size} must be a multiple of "
                             f"patch_size={patch_size}")
        tokens = (img_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_tiny(num_classes: int = 1000, img_size: int = 224, patch_size: int = 16,
             dim: int = 192, depth: int = 12, num_heads: int = 3) -> VisionTransformer:
    """ViT-tiny (dim 192, 12 blocks, 3 heads, patch 16); smaller sizes for tests."""
    return VisionTransformer(img_size, patch_size, dim, depth, num_heads, 4.0, num_classes)


def bert_classifier(vocab_size: int = 30522, hidden_size: int = 256, num_layers: int = 4,
                    num_heads: int = 4, intermediate_size: int = 1024, num_labels: int = 2,
                    max_position: int = 512):
    """A Hugging Face ``BertForSequenceClassification`` from a config (no download).

    It returns a ``SequenceClassifierOutput``, as a user's fine-tuned BERT does.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=intermediate_size, num_labels=num_labels,
                        max_position_embeddings=max_position)
    return BertForSequenceClassification(config).eval()
