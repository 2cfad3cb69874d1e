"""Any timm model as a student, as the seed builds it: backbone (in_chans=1) to 128 outputs, then linear.

``model(x, return_embedding=True)`` gives ``(logits, embedding)``: the backbone's 128-d output
(``embedding_dim``), the classifier's input.
"""

from __future__ import annotations

import timm
import torch
from torch import nn


class TimmStudent(nn.Module):
    def __init__(self, name: str, num_classes: int, embed_dim: int = 128, pretrained: bool = False):
        super().__init__()
        self.timm_name = name
        self.backbone = timm.create_model(name, pretrained=pretrained, in_chans=1, num_classes=embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)
        self.embedding_dim = embed_dim

    def forward(self, x: torch.Tensor, return_embedding: bool = False):
        embedding = self.backbone(x)
        logits = self.classifier(embedding)
        return (logits, embedding) if return_embedding else logits
