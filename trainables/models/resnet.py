"""Pre-activation ResNets for 32×32 images, standard and scale-invariant (torch only, no I/O).

The paper's pre-activation ResNet-18/34 (He et al. 2016, "Identity mappings"), CIFAR
variant: a BatchNorm2d on the input image, a 3×3 stem conv (no max-pool), four stages
of basic blocks at widths w, 2w, 4w, 8w (standard ``w = 64``), strides 1, 2, 2, 2, a
1×1 conv shortcut where the shape changes, and a head BN → ReLU → global average
pool → Linear. A block computes, with ``out = relu(bn1(x))``::

    x + conv2(relu(bn2(conv1(out))))            (same shape)
    shortcut(out) + conv2(relu(bn2(conv1(out))))  (stride 2 or more channels)

``scale_invariant=True`` is the paper's network "on the sphere": every BatchNorm has
no affine parameters, an extra BatchNorm precedes each shortcut conv, convs keep a
bias, and the last Linear is frozen at its random init. Then the loss is invariant to
multiplying all trainable parameters by a positive scalar.

Finer than that, both variants split their convs into groups that are scale-invariant
on their own (``scale_invariant_groups``): each block's ``conv1`` (it feeds ``bn2``),
and per residual stream the convs that write into it — the stem (or the projection
shortcut that opens a stage) and every ``conv2`` of that stage — since the stream is
read only through a BatchNorm. Scaling one such group leaves the output unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

STANDARD_WIDTH = 64
BLOCKS = {"preact-resnet18": (2, 2, 2, 2), "preact-resnet34": (3, 4, 6, 3)}


@dataclass(frozen=True)
class ResNetConfig:
    blocks: tuple[int, int, int, int] = BLOCKS["preact-resnet18"]
    width: int = STANDARD_WIDTH
    scale_invariant: bool = False
    in_channels: int = 3
    num_classes: int = 10


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, scale_invariant: bool):
        super().__init__()
        affine, bias = not scale_invariant, scale_invariant  # the paper's code: bias iff BN is not affine
        self.bn1 = nn.BatchNorm2d(c_in, affine=affine)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(c_out, affine=affine)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=bias)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            # the extra BN makes the shortcut scale-invariant in the sphere variant
            self.shortcut_norm = nn.BatchNorm2d(c_in, affine=False) if scale_invariant else nn.Identity()
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(self.shortcut_norm(out))
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + skip


class PreActResNet(nn.Module):
    def __init__(self, config: ResNetConfig):
        super().__init__()
        si = config.scale_invariant
        self.fully_scale_invariant = si
        w = config.width
        self.input_norm = nn.BatchNorm2d(config.in_channels, affine=not si)
        self.stem = nn.Conv2d(config.in_channels, w, 3, padding=1, bias=si)
        c_in = w
        for stage, (n_blocks, mult, stride) in enumerate(zip(config.blocks, (1, 2, 4, 8), (1, 2, 2, 2)), start=1):
            c_out = mult * w
            blocks = []
            for b in range(n_blocks):
                blocks.append(PreActBlock(c_in, c_out, stride if b == 0 else 1, si))
                c_in = c_out
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.head_norm = nn.BatchNorm2d(c_in, affine=not si)
        self.linear = nn.Linear(c_in, config.num_classes)
        if si:  # a trainable last layer would break the scale invariance
            self.linear.requires_grad_(False)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.input_norm(x))  # (B, w, 32, 32)
        for stage in self.stages():
            x = stage(x)  # (B, 8w, 4, 4) after the last
        x = F.relu(self.head_norm(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 8w)
        return self.linear(x)

    def scale_invariant_groups(self) -> list[list[str]]:
        """Names of the parameters of each group whose positive rescaling leaves the output unchanged."""
        names = dict((id(p), n) for n, p in self.named_parameters())

        def params(module: nn.Module) -> list[str]:
            return [names[id(p)] for p in module.parameters()]

        groups, stream = [], params(self.stem)
        for stage in self.stages():
            for block in stage:
                groups.append(params(block.conv1))
                if block.shortcut is not None:  # a new stream starts; the old one is read only via bn1
                    groups.append(stream)
                    stream = params(block.shortcut)
                stream = stream + params(block.conv2)
        groups.append(stream)  # read only through head_norm
        return groups
