"""Light-SERNet+ as the seed builds it (609,975 parameters for 7 classes).

Four parallel conv paths on the 1-channel spectrogram -- (13,1) 32 ch, (1,11) 32 ch, (3,3) 16 ch,
(6,6) 16 ch, each with bias, BN, ReLU, 2x2 average pool -- concatenated to 96 channels; then
bias-free 'same' 3x3 convs with BN + ReLU and the seed's average pools (64 -> pool 2 pad (1,0);
96 -> pool 2 pad (1,0); 128 -> none; 128 -> pool (2,1) pad (1,0); 160 -> pool (2,1)); a 1x1 conv
to 320; global average pool, dropout 0.3 and a linear layer.

``model(x, return_embedding=True)`` gives ``(logits, embedding)``: the 320-d globally pooled features
before dropout (``embedding_dim``), what feature-based KD compares with the teacher's.

The seed ends the network with a softmax, so its KD losses see probabilities, not logits. serkd
returns logits; ``seed_softmax=True`` reproduces the seed's head.

``pooling``: ``global`` (the seed's global average pool: today's model, parameters and state-dict keys),
``stats`` (mean + std over time per channel and frequency band, :mod:`serkd.models._pooling`: 2560-d
embedding) or ``attentive`` (the same, weighted by attention over frames).
"""

from __future__ import annotations

import torch
from torch import nn

from serkd.models import register
from serkd.models._pooling import TimePooling, check_pooling


def _same_conv(cin: int, cout: int, kernel, bias: bool) -> nn.Module:
    """A 'same' conv; even kernels get PyTorch's asymmetric 'same' padding (less before, more after)
    as an explicit pad, which avoids the extra copy torch makes for padding='same' with even kernels."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if kh % 2 and kw % 2:
        return nn.Conv2d(cin, cout, kernel, padding="same", bias=bias)
    pad = ((kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2)
    return nn.Sequential(nn.ZeroPad2d(pad), nn.Conv2d(cin, cout, kernel, bias=bias))


def _conv_bn_relu(cin: int, cout: int, kernel, bias: bool) -> list[nn.Module]:
    return [_same_conv(cin, cout, kernel, bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register("lightsernet")
class LightSERNetPlus(nn.Module):
    def __init__(self, num_classes: int, in_chans: int = 1, dropout: float = 0.3, seed_softmax: bool = False,
                 pooling: str = "global"):
        super().__init__()
        check_pooling(pooling)
        self.seed_softmax = seed_softmax
        self.paths = nn.ModuleList(
            nn.Sequential(*_conv_bn_relu(in_chans, width, kernel, bias=True), nn.AvgPool2d(2))
            for kernel, width in (((13, 1), 32), ((1, 11), 32), ((3, 3), 16), ((6, 6), 16))
        )
        stages = [  # (out channels, kernel, pool or None)
            (64, 3, nn.AvgPool2d(2, padding=(1, 0))),
            (96, 3, nn.AvgPool2d(2, padding=(1, 0))),
            (128, 3, None),
            (128, 3, nn.AvgPool2d((2, 1), padding=(1, 0))),
            (160, 3, nn.AvgPool2d((2, 1))),
            (320, 1, None),
        ]
        layers: list[nn.Module] = []
        cin = 96
        for cout, kernel, pool in stages:
            layers += _conv_bn_relu(cin, cout, kernel, bias=False)
            if pool is not None:
                layers.append(pool)
            cin = cout
        self.body = nn.Sequential(*layers)
        # one Sequential (its state-dict keys are the checkpoints'); forward splits it after the pooling
        if pooling == "global":
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)
            )
            self.embedding_dim = cin
        else:
            pool = TimePooling(cin, pooling)
            self.head = nn.Sequential(pool, nn.Identity(), nn.Dropout(dropout), nn.Linear(pool.out_dim, num_classes))
            self.embedding_dim = pool.out_dim

    def forward(self, x: torch.Tensor, return_embedding: bool = False):
        """Logits [B, C] (probabilities with ``seed_softmax``); with ``return_embedding`` also the
        pooled features [B, embedding_dim] before dropout (320 with global pooling)."""
        x = torch.cat([path(x) for path in self.paths], dim=1)
        pool, flatten, dropout, linear = self.head
        embedding = flatten(pool(self.body(x)))
        logits = linear(dropout(embedding))
        if self.seed_softmax:
            logits = logits.softmax(dim=1)
        return (logits, embedding) if return_embedding else logits
