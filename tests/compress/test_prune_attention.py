"""Structured pruning of attention (heads, head sizes) and bare parameters, on tiny models."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgepack.compress.attention import find_attention, unwrapped_parameters
from edgepack.compress.prune import PruneConfig, UntraceableModelError, prune
from edgepack.zoo.architectures import bert_classifier, convnext_atto, vit_tiny
from edgepack.zoo.transformer_models import Attention

IMAGE = torch.randn(1, 3, 32, 32)


def tiny_vit(num_heads=4):
    torch.manual_seed(0)
    return vit_tiny(5, img_size=32, patch_size=8, dim=48, depth=2, num_heads=num_heads).eval()


def _prune_quietly(model, config, example):
    """Prune; fail on any warning (torch-pruning's 'Unwrapped parameters' included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return prune(model, config, example, progress=False).record


def test_vit_loses_heads_and_width_and_keeps_its_attributes_consistent():
    model = tiny_vit()
    record = _prune_quietly(model, PruneConfig(ratio=0.5), IMAGE)
    assert record["attention_heads_before"] == [4, 4]
    assert record["attention_heads_after"] == [2, 2]
    for block in model.blocks:
        attn = block.attn
        assert attn.num_heads == 2 and attn.head_dim == 12  # head size kept
        assert attn.qkv.out_features == 3 * 2 * 12 and attn.proj.in_features == 24
    assert model.cls_token.shape == (1, 1, 24) and model.pos_embed.shape == (1, 17, 24)
    assert model(IMAGE).shape == (1, 5)
    after = record["params_by_kind"]["after"]
    assert after["attention"] < record["params_by_kind"]["before"]["attention"] / 3
    assert any("cls_token (dim 2)" in line for line in record["pruned"])


def _timm_forward(self, x):
    """timm's Attention.forward: it reshapes the heads back to the *input* width C."""
    batch, tokens, width = x.shape
    qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v)
    return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


def test_timm_attention_is_refused_with_the_setting_that_works(monkeypatch):
    monkeypatch.setattr(Attention, "forward", _timm_forward)
    with pytest.raises(UntraceableModelError, match="set prune.head_ratio=0"):
        prune(tiny_vit(num_heads=3), PruneConfig(ratio=0.5), IMAGE, progress=False)
    model = tiny_vit(num_heads=3)  # 3 heads of 16 lose 2 heads: 16 wide, not 24
    record = _prune_quietly(model, PruneConfig(ratio=0.5, head_ratio=0.0), IMAGE)
    assert [a["head_dim_after"] for a in record["attention"]] == [8, 8]
    assert record["attention_heads_after"] == [3, 3]
    assert model(IMAGE).shape == (1, 5)


class SeparateQKV(nn.Module):
    """Attention with separate q/k/v projections and a ``num_heads`` attribute."""

    def __init__(self, dim=32, num_heads=4):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (layer(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
                   for layer in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.out(y.reshape(b, n, self.num_heads * self.head_dim))


class TokenModel(nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.attention = attention
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        h = self.embed(x)
        out = self.attention(h, h, h, need_weights=False)[0] \
            if isinstance(self.attention, nn.MultiheadAttention) else self.attention(h)
        return self.head((h + out).mean(1))


@pytest.mark.parametrize("attention", [SeparateQKV, lambda: nn.MultiheadAttention(32, 4,
                                                                                   batch_first=True)])
def test_separate_projections_and_torch_multihead_attention_are_pruned(attention):
    torch.manual_seed(0)
    model = TokenModel(attention()).eval()
    tokens = torch.randn(1, 6, 8)
    record = _prune_quietly(model, PruneConfig(ratio=0.5), tokens)
    assert len(find_attention(model)) == 1 and record["params_after"] < record["params_before"]
    assert model(tokens).shape == (1, 3)
    if isinstance(model.attention, SeparateQKV):
        assert model.attention.num_heads == 2 and model.attention.q.out_features == 16


def test_bert_ratio_prunes_heads_and_ffn_and_the_record_says_so():
    model = bert_classifier(vocab_size=60, hidden_size=32, num_layers=2, num_heads=4,
                            intermediate_size=64)
    ids = torch.randint(0, 60, (1, 8))
    record = _prune_quietly(model, PruneConfig(ratio=0.5), (ids,))
    assert record["attention_heads_after"] == [2, 2]
    layer = model.bert.encoder.layer[0]
    assert layer.intermediate.dense.out_features == 32
    assert layer.attention.self.all_head_size == 16
    assert any(line.startswith("FFN width") for line in record["pruned"])
    assert any(line.startswith("hidden size 32") for line in record["kept"])
    before, after = record["params_by_kind"]["before"], record["params_by_kind"]["after"]
    assert after["attention"] == before["attention"] // 2
    assert after["embedding"] == before["embedding"]  # the hidden size is kept
    assert model(input_ids=ids).logits.shape == (1, 2)


def test_convnext_layer_scale_is_pruned_with_its_channels():
    torch.manual_seed(0)
    model = convnext_atto(4, width=8, depths=(1, 1, 1, 1), layer_scale=1.0).eval()
    assert [d for _, d in unwrapped_parameters(model)] == [0, 0, 0, 0]
    _prune_quietly(model, PruneConfig(ratio=0.5), IMAGE)
    block = model.features[2]
    assert block.gamma.shape == (4,) and block.dwconv.out_channels == 4
    assert model(IMAGE).shape == (1, 4)


class Shuffle(nn.Module):
    """A block whose reshape mixes channels (torch-pruning cannot follow it)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        b, c, n = y.shape
        return y.view(b, 2, 4, n).transpose(1, 2).reshape(b, 8, n)


class Mean(nn.Module):
    def forward(self, x):
        return x.mean(-1)


def test_every_layer_like_the_failing_one_is_named_at_once():
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv1d(1, 8, 1), Shuffle(), Shuffle(), Shuffle(), Mean(),
                             nn.Linear(8, 3))

    x = torch.randn(1, 1, 16)
    with pytest.raises(UntraceableModelError, match=r"add all 3 layers like it to "
                       r"prune.ignored_layers: '1.conv', '2.conv', '3.conv'"):
        prune(build(), PruneConfig(ratio=0.5), x, progress=False)
    model = build()
    prune(model, PruneConfig(ratio=0.5, ignored_layers=("1.conv", "2.conv", "3.conv")), x,
          progress=False)
    assert model(x).shape == (1, 3)
