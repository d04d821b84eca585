"""ImageEncoder: a real timm backbone with the classifier removed, plus a projection head."""

from __future__ import annotations

import pytest
import torch

from contrastlib.encoders import ImageEncoder, ProjectionHead
from contrastlib.registry import ENCODERS


def test_resnet18_features_and_projection():
    enc = ImageEncoder("resnet18", projection=[256, 64], normalize=True)
    x = torch.randn(4, 3, 32, 32)
    enc.train()
    z = enc(x)
    assert z.shape == (4, 64)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    assert enc.features(x).shape == (4, 512) and enc.feature_dim == 512
    z.sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)


def test_no_projection_returns_backbone_features_and_encode_restores_mode():
    enc = ImageEncoder("resnet18", in_chans=1)
    enc.train()
    out = enc.encode(torch.randn(5, 1, 16, 16), batch_size=2)
    assert out.shape == (5, enc.feature_dim) and enc.training


def test_projection_head_shape_and_validation():
    head = ProjectionHead([8, 16, 4])
    assert head(torch.randn(3, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match="at least"):
        ProjectionHead([8])


def test_registered():
    assert ENCODERS.get("image") is ImageEncoder
