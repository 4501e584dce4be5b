"""Small 1-D CNNs for the embedded ``mnist1d`` data (torch only, no I/O).

``ScaleInvariantCNN1d`` (``cnn1d-si``): the network on the sphere. ``CNN1d`` (``cnn1d``): the
same convolutions as a plain network, the 1-D analogue of the paper's VGG without
BatchNorm (convs with biases and ReLU, no normalisation, a trainable head), where
nothing is scale-invariant and weight decay cannot be undone by a weight-norm change.

The scale-invariant net:

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


def conv_stack(config: CNN1dConfig, *, bias: bool) -> nn.ModuleList:
    """conv1..conv4 of both 1-D CNNs: (in, out, kernel, stride) = (C, w, 5, 1), (w, w, 3, 2),
    (w, 2w, 3, 2), (2w, 2w, 3, 2), each padded to keep its length before the stride."""
    w = config.width
    plan = [(config.in_channels, w, 5, 1), (w, w, 3, 2), (w, 2 * w, 3, 2), (2 * w, 2 * w, 3, 2)]
    return nn.ModuleList(nn.Conv1d(c_in, c_out, k, stride=s, padding=k // 2, bias=bias) for c_in, c_out, k, s in plan)


class ScaleInvariantCNN1d(nn.Module):
    fully_scale_invariant = True  # every trainable parameter sits in a scale-invariant group

    def __init__(self, config: CNN1dConfig):
        super().__init__()
        w = config.width
        self.convs = conv_stack(config, bias=False)
        # no gain/shift after a conv: that keeps the conv scale-invariant
        self.norms = nn.ModuleList(nn.BatchNorm1d(conv.out_channels, affine=False) for conv in self.convs)
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


class CNN1d(nn.Module):
    """The plain counterpart of ``ScaleInvariantCNN1d``: the same four convolutions with biases,
    each followed by a ReLU only, the same pool, and a trainable Linear head with bias.
    Init: conv weights N(0, 2/(k·C_in)) (He, fan-in), conv biases 0; the head keeps PyTorch's
    default. (The paper's VGG uses fan-out, N(0, 2/(9·C_out)); here the first conv has fan-in 5 and
    fan-out 5w, so fan-out would shrink the signal 32-fold in variance and stall the start of
    training without normalisation.) Trainable parameters at width ``w``: the convs' weights and biases
    (5w + 3w² + 6w² + 12w² + 6w) + the head (10w·classes + classes): 25,066 at w = 32.
    """

    fully_scale_invariant = False

    def __init__(self, config: CNN1dConfig):
        super().__init__()
        w = config.width
        self.convs = conv_stack(config, bias=True)
        for conv in self.convs:  # He init, fan-in: keeps the signal's scale through the ReLUs (no normalisation to rescue it)
            nn.init.normal_(conv.weight, 0.0, (2.0 / (conv.kernel_size[0] * conv.in_channels)) ** 0.5)
            nn.init.zeros_(conv.bias)
        self.pool = nn.AdaptiveAvgPool1d(POOLED_LENGTH)
        self.head = nn.Linear(2 * w * POOLED_LENGTH, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        x = self.pool(x)  # (B, 2w, 5)
        return self.head(torch.flatten(x, 1))

    def scale_invariant_groups(self) -> list[list[str]]:
        return []  # no normalisation: rescaling any layer changes the output
