"""Convolutional networks users bring, written here (torchvision and timm cannot be installed
beside the CPU torch): ResNet-18, MobileNetV3-small, EfficientNet-B0 and a ConvNeXt.

Each builder follows its reference definition (layer order, kernel sizes, squeeze-excite,
activations) and takes size arguments, so tests can build tiny versions and benchmarks the
real ones. Random weights: these models exist to prove that every stage -- pruning, export,
quantization, benchmarking -- works on the structures real networks have (residual adds,
depthwise convolutions, gating by squeeze-excite, channels-last LayerNorm, layer scale).
The transformers (a ViT and a Hugging Face BERT) are in :mod:`edgepack.zoo.transformer_models`;
all are usable as recipe builders, e.g. ``edgepack.zoo.architectures:resnet18``.
"""

from __future__ import annotations

import torch
from torch import nn


def _divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (never below 90 % of it)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             activation: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


# ------------------------------------------------------------------ ResNet-18


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two 3x3 convs and a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    """torchvision's ResNet with basic blocks (``layers=(2, 2, 2, 2)`` is ResNet-18)."""

    def __init__(self, layers=(2, 2, 2, 2), width: int = 64, num_classes: int = 1000,
                 in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = width, []
        for index, blocks in enumerate(layers):
            cout = width * 2 ** index
            stage = [BasicBlock(cin, cout, 1 if index == 0 else 2)]
            stage += [BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, width: int = 64, blocks: int = 2) -> ResNet:
    """ResNet-18 (width 64, 2 blocks per stage); smaller ``width``/``blocks`` for tests."""
    return ResNet((blocks,) * 4, width, num_classes)


# ------------------------------------------------------------------ squeeze-excite


class SqueezeExcite(nn.Module):
    """Channel gating: global pool, 1x1 squeeze, activation, 1x1 excite, gate, scale."""

    def __init__(self, channels: int, squeezed: int, activation=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.activation = activation()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


# ------------------------------------------------------------------ MobileNetV3-small

# (kernel, expanded, out, squeeze-excite, hardswish, stride): torchvision's small config.
MOBILENET_V3_SMALL = (
    (3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1))


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: expand 1x1, depthwise kxk, squeeze-excite, project 1x1."""

    def __init__(self, cin, kernel, expanded, cout, use_se, hardswish, stride):
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        layers = [] if expanded == cin else [_conv_bn(cin, expanded, 1, activation=act)]
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded,
                               activation=act))
        if use_se:
            layers.append(SqueezeExcite(expanded, _divisible(expanded // 4)))
        layers.append(_conv_bn(expanded, cout, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_residual else out


class MobileNetV3(nn.Module):
    """torchvision's MobileNetV3-small: hardswish stem, 11 bottlenecks, 1024-wide classifier."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, depth: int = 11,
                 last_channel: int = 1024):
        super().__init__()
        cin = _divisible(16 * width_mult)
        layers = [_conv_bn(3, cin, 3, 2, activation=nn.Hardswish)]
        for kernel, expanded, cout, use_se, hswish, stride in MOBILENET_V3_SMALL[:depth]:
            cout, expanded = _divisible(cout * width_mult), _divisible(expanded * width_mult)
            layers.append(InvertedResidual(cin, kernel, expanded, cout, use_se, hswish, stride))
            cin = cout
        layers.append(_conv_bn(cin, 6 * cin, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = _divisible(last_channel * width_mult)
        self.classifier = nn.Sequential(nn.Linear(6 * cin, last), nn.Hardswish(),
                                        nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_small(num_classes: int = 1000, width_mult: float = 1.0,
                       depth: int = 11) -> MobileNetV3:
    """MobileNetV3-small; ``width_mult`` < 1 and ``depth`` < 11 make it smaller."""
    return MobileNetV3(num_classes, width_mult, depth)


# ------------------------------------------------------------------ EfficientNet-B0

# (expand ratio, kernel, stride, out channels, repeats): EfficientNet-B0's seven stages.
EFFICIENTNET_B0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                   (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


class MBConv(nn.Module):
    """EfficientNet's block: expand 1x1, depthwise, squeeze-excite (SiLU, sigmoid), project."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1, activation=nn.SiLU)]
        layers += [_conv_bn(hidden, hidden, kernel, stride, groups=hidden, activation=nn.SiLU),
                   SqueezeExcite(hidden, max(1, cin // 4), nn.SiLU, nn.Sigmoid),
                   _conv_bn(hidden, cout, 1, activation=None)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return out + x if self.use_residual else out


class EfficientNet(nn.Module):
    """EfficientNet-B0 (width and depth multipliers 1.0); eval-mode, no stochastic depth."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0,
                 depth_mult: float = 1.0):
        super().__init__()
        cin = _divisible(32 * width_mult)
        layers = [_conv_bn(3, cin, 3, 2, activation=nn.SiLU)]
        for expand, kernel, stride, cout, repeats in EFFICIENTNET_B0:
            cout = _divisible(cout * width_mult)
            for index in range(max(1, round(repeats * depth_mult))):
                layers.append(MBConv(cin, cout, expand, kernel, stride if index == 0 else 1))
                cin = cout
        head = _divisible(1280 * width_mult)
        layers.append(_conv_bn(cin, head, 1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(head, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet_b0(num_classes: int = 1000, width_mult: float = 1.0,
                    depth_mult: float = 1.0) -> EfficientNet:
    """EfficientNet-B0; multipliers below 1 make a tiny one for tests."""
    return EfficientNet(num_classes, width_mult, depth_mult)


# ------------------------------------------------------------------ ConvNeXt


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's stem and downsampling)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm (channels last), 4x MLP with GELU, layer scale ``gamma``."""

    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x):
        out = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        out = self.gamma * self.pwconv2(self.act(self.pwconv1(out)))
        return x + out.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt: patchify stem, four stages of blocks, LayerNorm + conv downsampling."""

    def __init__(self, dims=(40, 80, 160, 320), depths=(2, 2, 6, 2), num_classes: int = 1000,
                 layer_scale: float = 1e-6):
        super().__init__()
        layers = [nn.Conv2d(3, dims[0], 4, 4), ChannelsFirstLayerNorm(dims[0], eps=1e-6)]
        for index, (dim, depth) in enumerate(zip(dims, depths)):
            if index:
                layers += [ChannelsFirstLayerNorm(dims[index - 1], eps=1e-6),
                           nn.Conv2d(dims[index - 1], dim, 2, 2)]
            layers += [ConvNeXtBlock(dim, layer_scale) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        return self.head(self.norm(self.features(x).mean((2, 3))))


def convnext_atto(num_classes: int = 1000, width: int = 40, depths=(2, 2, 6, 2),
                  layer_scale: float = 1e-6) -> ConvNeXt:
    """ConvNeXt-atto (dims 40-80-160-320, depths 2-2-6-2); ``width`` scales every stage.

    ``layer_scale`` is the initial ``gamma``: ConvNeXt uses 1e-6, which makes random blocks
    near-identity; tests pass 1.0 so every block changes the output.
    """
    return ConvNeXt(tuple(width * 2 ** i for i in range(4)), tuple(depths), num_classes,
                    layer_scale)


# The transformers live in their own module; they are re-exported here so every builder is
# ``edgepack.zoo.architectures:<name>``.
from edgepack.zoo.transformer_models import bert_classifier, vit_tiny  # noqa: E402,F401
