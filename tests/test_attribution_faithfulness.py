"""Deletion and insertion curves against a hand computation on a toy linear model; the input-gradient map."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from patchorder.attention import channel_mean, deletion_insertion, faithfulness_table, input_gradient, random_map


class PatchLinear(nn.Module):
    """Two classes on 1-channel 4x4 images: logit_c = sum_p w[c, p] * (mean pixel of 2x2 patch p), 2x2 patches."""

    def __init__(self, weights):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(weights, dtype=torch.float64))

    def forward(self, x):
        patches = x.reshape(-1, 2, 2, 2, 2).mean((2, 4)).reshape(-1, 4)  # (N, 4) raster patches
        return patches @ self.w.t()


W = [[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 0.0]]


def hand_probability(patch_values, cls):
    """softmax_cls of the toy model's logits, written out."""
    logits = [sum(W[c][p] * patch_values[p] for p in range(4)) for c in range(2)]
    return math.exp(logits[cls]) / sum(math.exp(v) for v in logits)


def image_from_patches(values):
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    for p, v in enumerate(values):
        r, c = divmod(p, 2)
        x[0, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = v
    return x


def test_curves_and_auc_match_a_hand_computation():
    model = PatchLinear(W)
    values = [0.4, -1.0, 2.0, 1.5]
    images = image_from_patches(values)
    base = 0.25
    maps = torch.tensor([[[0.3, 0.1], [0.2, 0.9]]])  # order: patch 3, then 0, then 2, then 1
    order = [3, 0, 2, 1]
    target = 0 if hand_probability(values, 0) > 0.5 else 1  # the predicted class
    deletion, insertion = [], []
    for k in range(5):
        removed = order[:k]
        deletion.append(hand_probability([base if p in removed else values[p] for p in range(4)], target))
        insertion.append(hand_probability([values[p] if p in removed else base for p in range(4)], target))
    x = [0, 0.25, 0.5, 0.75, 1.0]
    hand_auc = lambda ys: sum((x[i + 1] - x[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(4))  # noqa: E731

    curves = deletion_insertion(model, images, maps, baseline=torch.tensor([base]), steps=None)
    np.testing.assert_allclose(curves.fractions, x)
    np.testing.assert_allclose(curves.deletion[0], deletion, rtol=1e-12)
    np.testing.assert_allclose(curves.insertion[0], insertion, rtol=1e-12)
    np.testing.assert_allclose(curves.deletion_auc[0], hand_auc(deletion), rtol=1e-12)
    np.testing.assert_allclose(curves.insertion_auc[0], hand_auc(insertion), rtol=1e-12)
    assert curves.target.tolist() == [target]

    # two steps: 0, 2 and 4 patches; a given target class
    two = deletion_insertion(model, images, maps, baseline=torch.tensor([base]), target=1 - target, steps=2)
    expected = [hand_probability([base if p in order[:k] else values[p] for p in range(4)], 1 - target)
                for k in (0, 2, 4)]
    np.testing.assert_allclose(two.deletion[0], expected, rtol=1e-12)
    np.testing.assert_allclose(two.deletion_auc[0], 0.25 * (expected[0] + 2 * expected[1] + expected[2]), rtol=1e-12)


def test_ties_break_by_raster_index_and_a_baseline_image_is_used_as_is():
    model = PatchLinear(W)
    values = [1.0, 2.0, -1.0, 0.5]
    images = image_from_patches(values)
    baseline = image_from_patches([0.1, 0.2, 0.3, 0.4])[0]
    curves = deletion_insertion(model, images, torch.zeros(1, 2, 2), baseline=baseline, target=1, steps=None)
    expected = [hand_probability([[0.1, 0.2, 0.3, 0.4][p] if p < k else values[p] for p in range(4)], 1)
                for k in range(5)]
    np.testing.assert_allclose(curves.deletion[0], expected, rtol=1e-12)


def test_input_gradient_is_the_patch_sum_of_the_absolute_gradient():
    model = PatchLinear(W)
    images = image_from_patches([0.4, -1.0, 2.0, 1.5]).repeat(2, 1, 1, 1)
    grad_map = input_gradient(model, images, (2, 2), target=[0, 1])
    # d logit_c / d pixel = w[c, p] / 4 for each of the 4 pixels of patch p: the patch sum is |w[c, p]|
    np.testing.assert_allclose(grad_map.numpy(), np.abs(np.array(W)).reshape(2, 2, 2), rtol=1e-6)


def test_channel_mean_table_and_bad_requests():
    batches = [(torch.ones(2, 3, 4, 4), None), (torch.zeros(2, 3, 4, 4) + torch.tensor([1.0, 3.0, 5.0]).view(1, 3, 1, 1), None)]
    np.testing.assert_allclose(channel_mean(batches).numpy(), [1.0, 2.0, 3.0])
    model = PatchLinear(W)
    images = image_from_patches([0.4, -1.0, 2.0, 1.5])
    with pytest.raises(ValueError, match="steps must be in"):
        deletion_insertion(model, images, torch.zeros(1, 2, 2), baseline=[0.0], steps=9)
    with pytest.raises(ValueError, match="baseline must be"):
        deletion_insertion(model, images, torch.zeros(1, 2, 2), baseline=[0.0, 1.0])
    with pytest.raises(ValueError, match="does not tile"):
        deletion_insertion(model, images, torch.zeros(1, 3, 3), baseline=[0.0])
    good = deletion_insertion(model, images, torch.tensor([[[0.3, 0.1], [0.2, 0.9]]]), baseline=[0.25], steps=None)
    bad = deletion_insertion(model, images, -torch.tensor([[[0.3, 0.1], [0.2, 0.9]]]), baseline=[0.25], steps=None)
    rows = faithfulness_table({"bad": bad, "good": good})
    assert [r["map"] for r in rows] == sorted(["good", "bad"], key=lambda n: {"good": good, "bad": bad}[n].deletion_auc[0])
    assert random_map(2, (3, 3), seed=1).shape == (2, 3, 3)
    assert torch.equal(random_map(2, (3, 3), seed=1), random_map(2, (3, 3), seed=1))
