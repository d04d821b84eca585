"""Loss details the first core got wrong (issue: "Loss details", "DDP through the CLI")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contrastlib.losses import AlignUniformLoss, soft_cross_entropy


def test_an_excluded_positive_does_not_down_weight_its_row():
    """Target on columns 0 and 1, column 0 excluded: the row's target is column 1 alone."""
    scores = torch.tensor([[2.0, 1.0, -1.0], [0.5, 0.0, 1.5]])
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    exclude = torch.tensor([[True, False, False], [False, False, False]])
    got = soft_cross_entropy(scores, target, exclude=exclude, reduction="none")
    row0 = -F.log_softmax(torch.tensor([1.0, -1.0]), dim=0)[0]  # column 0 gone from the softmax
    row1 = -F.log_softmax(scores[1], dim=0)[1]
    torch.testing.assert_close(got, torch.stack([row0, row1]))


def test_a_row_whose_only_positive_is_excluded_leaves_the_mean():
    scores = torch.tensor([[2.0, 1.0], [0.5, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    exclude = torch.tensor([[True, False], [False, False]])
    got = soft_cross_entropy(scores, target, exclude=exclude)
    torch.testing.assert_close(got, -F.log_softmax(scores[1], dim=0)[1])


def test_align_uniform_refuses_hard_negatives_instead_of_dropping_them():
    a, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="hard negatives are not part of this loss"):
        AlignUniformLoss()(a, torch.cat([p, n]))
    assert AlignUniformLoss.hard_negatives is False
    AlignUniformLoss()(a, p)  # pairs are fine


def test_shape_check_runs_on_the_tensor_device(monkeypatch):
    """NCCL refuses CPU tensors: the gather's shape check must use the tensor's device."""
    from contrastlib.losses import distributed

    seen: list[torch.device] = []

    class Gathered(Exception):
        pass

    def fake_all_gather(out, tensor):
        seen.append(tensor.device)
        raise Gathered

    monkeypatch.setattr(distributed.dist, "all_gather", fake_all_gather)
    x = torch.empty(3, 4, device="meta")  # stands in for a CUDA tensor on a CPU-only machine
    with pytest.raises(Gathered):
        distributed._check_equal_shapes(x, 2)
    assert seen == [torch.device("meta")]
