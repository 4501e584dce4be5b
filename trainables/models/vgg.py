"""VGG without BatchNorm for 32×32 images, as in the paper's Fig. 1 (torch only, no I/O).

Configuration A (VGG-11) or D (VGG-16) of Simonyan & Zisserman with every width a
multiple of ``w`` (standard ``w = 64``): 3×3 convs with bias and ReLU, 2×2 max-pools
down to 1×1, then a 8w → 8w → 8w → classes classifier with biases and no dropout. Init
as the paper's code (after Fu's pytorch-vgg-cifar10): conv weights N(0, 2/(9·C_out)),
conv biases 0; Linear layers keep PyTorch's default init.

Without normalisation layers nothing here is scale-invariant (``scale_invariant_groups``
is empty): VGG is the paper's example that weight decay helps beyond scale invariance.

``imagenet_normalize``: the authors' VGG normalises its (already CIFAR-normalised) input a
second time in ``forward``, with ImageNet's mean and std: inputs ≈ 5.3–5.8× larger and
shifted. A network without BatchNorm at LR 0.1 is sensitive to that, so the paper's
pipeline is an option (``input_norm: authors-vgg`` of the vision trainable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

STANDARD_WIDTH = 64
POOL = "M"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Layer plans in units of the base width; "M" is a 2×2 max-pool.
PLANS = {
    "vgg11": [1, POOL, 2, POOL, 4, 4, POOL, 8, 8, POOL, 8, 8, POOL],
    "vgg16": [1, 1, POOL, 2, 2, POOL, 4, 4, 4, POOL, 8, 8, 8, POOL, 8, 8, 8, POOL],
}


@dataclass(frozen=True)
class VGGConfig:
    depth: str = "vgg16"  # a key of PLANS
    width: int = STANDARD_WIDTH
    in_channels: int = 3
    num_classes: int = 10
    imagenet_normalize: bool = False  # (x − ImageNet mean) / ImageNet std first, as the authors' forward


class VGG(nn.Module):
    fully_scale_invariant = False

    def __init__(self, config: VGGConfig):
        super().__init__()
        self.imagenet_normalize = config.imagenet_normalize
        if self.imagenet_normalize:
            if config.in_channels != 3:
                raise ValueError(f"imagenet_normalize needs 3 input channels, not {config.in_channels}")
            # constants, not state: rebuilt with the model, kept out of its state_dict
            self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for item in PLANS[config.depth]:
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
            else:
                c_out = item * config.width
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
                c_in = c_out
        self.features = nn.Sequential(*layers)  # (B, 8w, 1, 1) for a 32×32 input
        self.classifier = nn.Sequential(
            nn.Linear(c_in, c_in), nn.ReLU(inplace=True),
            nn.Linear(c_in, c_in), nn.ReLU(inplace=True),
            nn.Linear(c_in, config.num_classes),
        )
        for m in self.features:
            if isinstance(m, nn.Conv2d):  # He init with fan-out, as the paper's code
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (9 * m.out_channels)))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.imagenet_normalize:
            x = (x - self.input_mean) / self.input_std
        x = self.features(x)  # (B, 8w, 1, 1)
        return self.classifier(torch.flatten(x, 1))

    def scale_invariant_groups(self) -> list[list[str]]:
        return []
