"""``tiny``: a Wav2Small-class student (under 100 K parameters) for phones and microcontrollers.

Conv layers on the log-mel (or any (B, 1, F, T) feature) and statistics pooling:

- a 3x3 stem (stride 2, 24 channels), then five depthwise-separable blocks (3x3 depthwise + 1x1 pointwise,
  each with BatchNorm and ReLU): 48 (stride 2), 64 (stride 2), 96 (stride 2), 128 (stride 2 in frequency
  only), 128; a 128-mel input ends 4 bins high at 1/16 of the frame rate (a 5 s clip: 20 steps of 256 ms);
- ``pooling`` (default ``stats``): mean + std over time per channel and frequency band
  (:mod:`serkd.models._pooling`, a 1024-d embedding), or ``attentive``, or ``global``;
- dropout and a linear layer to the classes.

51,367 parameters and 23 MFLOP for a 5 s 128-mel input with 7 classes (``benchmarks/bench_students.py``),
so the in-graph front-end (73 MFLOP) costs more than the network; ``serkd export --int8`` writes it with
the log-mel front-end in 156 KB (the limit: 250 KB). ``model(x, return_embedding=True)`` gives
``(logits, embedding)`` (the pooled vector).
"""

from __future__ import annotations

import torch
from torch import nn

from serkd.models import register
from serkd.models._pooling import TimePooling, check_pooling

STEM = 24
BLOCKS = ((48, 2), (64, 2), (96, 2), (128, (2, 1)), (128, 1))  # (channels, stride)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register("tiny")
class TinySER(nn.Module):
    def __init__(self, num_classes: int, pooling: str = "stats", dropout: float = 0.2, in_chans: int = 1):
        super().__init__()
        check_pooling(pooling)
        layers = _conv_bn_relu(in_chans, STEM, 3, 2)
        cin = STEM
        for cout, stride in BLOCKS:
            layers += _conv_bn_relu(cin, cin, 3, stride, groups=cin) + _conv_bn_relu(cin, cout, 1, 1)
            cin = cout
        self.body = nn.Sequential(*layers)
        self.pool = (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()) if pooling == "global"
                     else TimePooling(cin, pooling))
        self.embedding_dim = cin if pooling == "global" else self.pool.out_dim
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.embedding_dim, num_classes)

    def forward(self, x: torch.Tensor, return_embedding: bool = False):
        embedding = self.pool(self.body(x))
        logits = self.classifier(self.dropout(embedding))
        return (logits, embedding) if return_embedding else logits
