"""Any timm model as a student, as the seed builds it: backbone (in_chans=1) to 128 outputs, then linear.

``model(x, return_embedding=True)`` gives ``(logits, embedding)``: the 128-d embedding (``embedding_dim``),
the classifier's input.

``pooling``: ``global`` is timm's own head (global average pool, and the model's own head layers) to the
128-d embedding: today's students, parameter for parameter. ``stats`` / ``attentive`` take the backbone's
feature map (``forward_features``: (B, C, F', T')) and pool it over time only, keeping frequency bands
(:mod:`serkd.models._pooling`), then a linear layer to the 128-d embedding; head layers of the timm model
that only served its global pool (MobileNetV3's 1x1 ``conv_head`` after the pool) are dropped.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from serkd.models._pooling import TimePooling, check_pooling


class TimmStudent(nn.Module):
    def __init__(self, name: str, num_classes: int, embed_dim: int = 128, pretrained: bool = False,
                 pooling: str = "global"):
        super().__init__()
        check_pooling(pooling)
        self.timm_name = name
        self.pooling = pooling
        if pooling == "global":
            self.backbone = timm.create_model(name, pretrained=pretrained, in_chans=1, num_classes=embed_dim)
        else:
            self.backbone = timm.create_model(name, pretrained=pretrained, in_chans=1, num_classes=0,
                                              global_pool="")
            _drop_unused_children(self.backbone)
            self.pool = TimePooling(self.backbone.num_features, pooling)
            self.project = nn.Linear(self.pool.out_dim, embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.embedding_dim = embed_dim

    def forward(self, x: torch.Tensor, return_embedding: bool = False):
        if self.pooling == "global":
            embedding = self.backbone(x)
        else:
            embedding = self.project(self.pool(self.backbone.forward_features(x)))
        logits = self.classifier(embedding)
        return (logits, embedding) if return_embedding else logits


def _drop_unused_children(backbone: nn.Module) -> None:
    """Replace the top-level children whose parameters ``forward_features`` never touches (head layers after
    timm's global pool) by identities, found with one backward pass in eval mode (running statistics and the
    random stream untouched)."""
    was_training = backbone.training
    backbone.eval()
    with torch.enable_grad():
        backbone.forward_features(torch.zeros(1, 1, 64, 64)).sum().backward()
    for name, child in list(backbone.named_children()):
        params = list(child.parameters())
        if params and all(p.grad is None for p in params):
            setattr(backbone, name, nn.Identity())
    for p in backbone.parameters():
        p.grad = None
    backbone.train(was_training)
