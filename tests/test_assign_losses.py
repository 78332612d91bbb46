"Label assignment, losses and the normaliser on hand-made cases with exact expected values."
import math

import pytest
import torch

from unimd.assign import assign_targets, make_points
from unimd.config import OFFICIAL_REGRESSION_RANGE, TrainConfig
from unimd.losses import LossNormalizer, diou_loss_1d, sigmoid_focal_loss, task_loss


def one(segs, labels, Q, lengths=(16, 8), strides=(1, 2), ranges=((0, 4), (4, 8)), **kw):
    pts = make_points(list(lengths), list(strides), list(ranges))
    segs = torch.tensor([segs], dtype=torch.float32); labels = torch.tensor([labels])
    return assign_targets(pts, segs, labels, torch.ones_like(labels, dtype=torch.bool), Q, **kw)


def test_points_layout():
    p = make_points([4, 2], [1, 2], [(0, 4), (4, 8)])
    assert p.tolist() == [[0, 0, 4, 1], [1, 0, 4, 1], [2, 0, 4, 1], [3, 0, 4, 1], [0, 4, 8, 2], [2, 4, 8, 2]]


def test_exact_positive_points_and_targets():
    cls, reg = one([[2., 10.]], [1], Q=3)
    assert cls[0].nonzero().tolist() == [[6, 1], [18, 1], [19, 1], [20, 1]]
    assert reg[0, 6, 1].tolist() == [4.0, 4.0]                 # stride 1
    assert reg[0, 18, 1].tolist() == [1.0, 3.0]                # t=4 on stride 2: (4-2)/2, (10-4)/2
    assert reg[0, 20, 1].tolist() == [3.0, 1.0]
    assert torch.isinf(reg[0, :, 0]).all() and torch.isinf(reg[0, :, 2]).all()


def test_centre_sampling_boundary_is_strict():
    # segment [0, 3] (centre 1.5), stride 1: centre region (0, 3) → t = 1, 2; t = 0 is on the boundary
    cls, _ = one([[0., 3.]], [0], Q=1, lengths=(8,), strides=(1,), ranges=((0, 100),))
    assert cls[0, :, 0].nonzero().flatten().tolist() == [1, 2]
    cls, _ = one([[0., 3.]], [0], Q=1, lengths=(8,), strides=(1,), ranges=((0, 100),), center_sample="none")
    assert cls[0, :, 0].nonzero().flatten().tolist() == [1, 2]


def test_regression_range_is_inclusive():
    # at t=4 distances (4, 4): max 4 lies in both [0, 4] and [4, 8]
    cls, _ = one([[0., 8.]], [0], Q=1, lengths=(16, 8), radius=10)
    assert cls[0, 4, 0] == 1 and cls[0, 16 + 2, 0] == 1


def test_same_query_ties_official_and_shortest():
    A, B = [88., 110.], [91., 109.]
    kw = dict(lengths=(128,), strides=(1,), ranges=((0, 10000),), radius=100)
    _, reg = one([A, B], [0, 0], Q=1, **kw)
    assert reg[0, 100, 0].tolist() == [9.0, 9.0]
    _, reg = one([B, A], [0, 0], Q=1, **kw)
    assert reg[0, 100, 0].tolist() == [12.0, 10.0]
    _, reg = one([A, B], [0, 0], Q=1, official_tie_rule=False, **kw)
    assert reg[0, 100, 0].tolist() == [9.0, 9.0]
    _, reg = one([B, A], [0, 0], Q=1, official_tie_rule=False, **kw)
    assert reg[0, 100, 0].tolist() == [9.0, 9.0]
    # equal lengths: the first in annotation order wins under the shortest rule
    _, reg = one([[90., 110.], [92., 112.]], [0, 0], Q=1, official_tie_rule=False, **kw)
    assert reg[0, 100, 0].tolist() == [10.0, 10.0]


def test_padded_ground_truth_is_ignored_and_batch_matches_single():
    pts = make_points([32, 16], [1, 2], OFFICIAL_REGRESSION_RANGE[:2])
    segs = torch.tensor([[[2., 9.], [10., 20.]], [[4., 12.], [0., 0.]]])
    labels = torch.tensor([[0, 2], [1, 0]]); gm = torch.tensor([[True, True], [True, False]])
    cls, reg = assign_targets(pts, segs, labels, gm, 3, radius=10)
    c1, r1 = assign_targets(pts, segs[1:, :1], labels[1:, :1], gm[1:, :1], 3, radius=10)
    assert torch.equal(cls[1:], c1) and torch.equal(reg[1:], r1)


def test_focal_values():
    # p = sigmoid(0) = 0.5: y=1 → 0.25 · 0.5² · ln2 ; y=0 → 0.75 · 0.5² · ln2
    x = torch.zeros(2); y = torch.tensor([1., 0.])
    assert torch.allclose(sigmoid_focal_loss(x, y), torch.tensor([0.25, 0.75]) * 0.25 * math.log(2))
    # a confident correct prediction costs almost nothing, a confident wrong one a lot
    assert sigmoid_focal_loss(torch.tensor([8.]), torch.tensor([1.])) < 1e-7
    assert sigmoid_focal_loss(torch.tensor([-8.]), torch.tensor([1.])) > 1.9


def test_diou_values():
    t = torch.tensor([[2., 2.]])
    assert diou_loss_1d(t, t).item() == 0
    assert torch.allclose(diou_loss_1d(torch.tensor([[1., 3.]]), t), torch.tensor([1 - 0.6 + 0.04]))
    # disjoint-looking but same point: pred [t-1, t+1] vs target [t-4, t]: IoU 1/5, centres 2 apart, enclosing 5
    assert torch.allclose(diou_loss_1d(torch.tensor([[1., 1.]]), torch.tensor([[4., 0.]])), torch.tensor([1 - 0.2 + (2 / 5) ** 2]))


def test_normaliser_sequence():
    n = LossNormalizer(100)
    assert [round(n.update(k), 6) for k in (43, 28, 0)] == [94.3, 87.67, 79.003]
    m = LossNormalizer(1); m.load_state_dict(n.state_dict())
    assert m.value == n.value


def test_task_loss_ignores_padded_points_and_queries():
    torch.manual_seed(0)
    logits = torch.randn(1, 6, 3); off = torch.rand(1, 6, 3, 2)
    cls_t = torch.zeros(1, 6, 3); cls_t[0, 2, 1] = 1
    reg_t = torch.full((1, 6, 3, 2), torch.inf); reg_t[0, 2, 1] = torch.tensor([1., 2.])
    pm = torch.tensor([[True] * 4 + [False] * 2]); qm = torch.tensor([[True, True, False]])
    base = task_loss(logits, off, pm, qm, cls_t, reg_t, LossNormalizer(10))
    noisy = logits.clone(); noisy[0, 4:] = 50; noisy[0, :, 2] = -50   # only padded entries change
    other = task_loss(noisy, off, pm, qm, cls_t, reg_t, LossNormalizer(10))
    assert base.num_pos == 1 and torch.equal(base.cls_loss, other.cls_loss) and torch.equal(base.reg_loss, other.reg_loss)
    expected_cls = sigmoid_focal_loss(logits[0, :4, :2], cls_t[0, :4, :2]).sum() / (0.9 * 10 + 0.1)
    assert torch.allclose(base.cls_loss, expected_cls)
