"""A small scale-invariant 1-D CNN for the embedded ``mnist1d`` data (torch only, no I/O).

Four bias-free Conv1d layers, each followed by BatchNorm1d without affine parameters
and a ReLU, an adaptive average pool to 5 positions and a Linear head without bias
that stays frozen at its random initialisation. Every conv feeds a normalisation, so
the output does not change when one conv's weights (or all of them) are multiplied by
a positive scalar: each conv is its own scale-invariant group, the paper's "network on
the sphere" at a size that trains on one CPU core in seconds per epoch.

Layer shapes at width ``w`` (standard ``w = 32``, ~22k trainable parameters), input
(B, 1, 40):

    conv1  1 → w,   k5 s1  (B, w, 40)
    conv2  w → w,   k3 s2  (B, w, 20)
    conv3  w → 2w,  k3 s2  (B, 2w, 10)
    conv4  2w → 2w, k3 s2  (B, 2w, 5)
    pool → (B, 2w, 5) → flatten (B, 10w) → head (frozen) → (B, classes)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

STANDARD_WIDTH = 32
POOLED_LENGTH = 5


@dataclass(frozen=True)
class CNN1dConfig:
    width: int = STANDARD_WIDTH
    in_channels: int = 1
    num_classes: int = 10


class ScaleInvariantCNN1d(nn.Module):
    fully_scale_invariant = True  # every trainable parameter sits in a scale-invariant group

    def __init__(self, config: CNN1dConfig):
        super().__init__()
        w = config.width
        # (in, out, kernel, stride) of conv1..conv4
        plan = [(config.in_channels, w, 5, 1), (w, w, 3, 2), (w, 2 * w, 3, 2), (2 * w, 2 * w, 3, 2)]
        self.convs = nn.ModuleList(nn.Conv1d(c_in, c_out, k, stride=s, padding=k // 2, bias=False)
                                   for c_in, c_out, k, s in plan)
        # no gain/shift after a conv: that keeps the conv scale-invariant
        self.norms = nn.ModuleList(nn.BatchNorm1d(c_out, affine=False) for _, c_out, _, _ in plan)
        self.pool = nn.AdaptiveAvgPool1d(POOLED_LENGTH)
        self.head = nn.Linear(2 * w * POOLED_LENGTH, config.num_classes, bias=False)
        self.head.weight.requires_grad_(False)  # a trainable head would break scale invariance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x)))
        x = self.pool(x)  # (B, 2w, 5)
        return self.head(torch.flatten(x, 1))

    def scale_invariant_groups(self) -> list[list[str]]:
        """Parameter names whose joint positive rescaling leaves the output unchanged: each conv."""
        return [[f"convs.{i}.weight"] for i in range(len(self.convs))]
