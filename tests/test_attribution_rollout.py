"""Rollout and gradient-weighted attribution against oracles: a brute-force product of dense per-block operators,
and a constructed model whose output depends on one patch only."""
import itertools

import numpy as np
import pytest
import timm
import torch
from torch import nn

from patchorder.attention import attribution, deletion_insertion, gradient_weighted_attention, rollout
from patchorder.attention.rollout import eval_mode_capture
from patchorder.models import SS2D, capture_ssm


# ------------------------------------------------------------------ brute force, from the captured records


def dense_alpha(record):
    """(b, K, d, L, L) per route and channel, in sequence order, straight from the defining formula in float64:
    alpha[i, j] = sum_n C[i, n] exp(A_n (S_i - S_j)) delta_j B[j, n] for j <= i."""
    b, KD, L = record.delta.shape
    K = record.num_routes
    d = KD // K
    delta = record.delta.double().view(b, K, d, L)
    A = record.A.double().view(K, d, -1)
    B, C = record.B.double(), record.C.double()  # (b, K, n, L)
    S = delta.cumsum(-1)
    gap = S[..., :, None] - S[..., None, :]  # (b, K, d, L, L)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    alpha = torch.zeros(b, K, d, L, L, dtype=torch.float64)
    for n in range(A.shape[-1]):
        decay = torch.exp(A[None, :, :, n, None, None] * gap.clamp_min(0))
        alpha += C[:, :, None, n, :, None] * decay * (delta * B[:, :, None, n, :])[..., None, :]
    return alpha * causal


def dense_channel_operators(record):
    """(b, d, L, L) per channel in raster patch space, and the scan input u (b, d, L) in raster order: each
    route's exact linear map (checked against the scan's own output y = alpha u + D u), moved to patch space
    and summed over routes (the cross-merge)."""
    alpha = dense_alpha(record)
    b, K, d, L, _ = alpha.shape
    u = record.u.double().view(b, K, d, L)
    y = torch.einsum("bkdij,bkdj->bkdi", alpha, u) + record.D.double().view(1, K, d, 1) * u
    torch.testing.assert_close(y, record.y.double().view(b, K, d, L), rtol=1e-9, atol=1e-12)
    merged = torch.zeros(b, d, L, L, dtype=torch.float64)
    u_raster = torch.zeros(b, d, L, dtype=torch.float64)
    for r in range(K):
        route = record.routes[r]  # sequence pair (i, j) -> patch pair (route[i], route[j]), a permutation
        merged[:, :, route[:, None], route[None, :]] += alpha[:, r]
        if r == 0:
            u_raster[:, :, route] = u[:, r]
        else:  # every route scans the same features
            torch.testing.assert_close(u[:, r], u_raster[:, :, route], rtol=0, atol=0)
    return merged, u_raster


def dense_block_operator(record):
    """The block's rollout operator before normalisation: mean |.| over channels of the merged operators."""
    return dense_channel_operators(record)[0].abs().mean(1)


def downsampling_operator(coarse, fine):
    """(h*w, H*W): coarse patch (r, c) spread equally over the fine patches it covers, by explicit coordinates."""
    (h, w), (H, W) = coarse, fine
    fy, fx = H // h, W // w
    op = torch.zeros(h * w, H * W, dtype=torch.float64)
    for r, c, dr, dc in itertools.product(range(h), range(w), range(fy), range(fx)):
        op[r * w + c, (r * fy + dr) * W + (c * fx + dc)] = 1.0 / (fy * fx)
    return op


def brute_force_rollout(records, residual, operators=None):
    """(b, L_final, L_0): the product, in forward order, of every block's residual I + (1 - residual) A (by
    default A = the block operator / its row sums) and of every downsampling between them."""
    total = None
    grid = None
    for index, record in enumerate(records):
        if operators is None:
            A = dense_block_operator(record)
            A = A / A.sum(-1, keepdim=True)
        else:
            A = operators[index]
        L = A.shape[-1]
        R = residual * torch.eye(L, dtype=torch.float64) + (1 - residual) * A
        if total is None:
            total = R
        else:
            if tuple(record.grid) != grid:
                total = downsampling_operator(record.grid, grid) @ total
            total = R @ total
        grid = tuple(record.grid)
    return total


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", ordering="spiral", num_classes=4, depths=(2, 1, 2),
                              dims=(8, 16, 16), scan_backend="reference").double()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    return model, images


@pytest.mark.parametrize("residual", [0.5, 0.2])
def test_rollout_equals_brute_force_product_of_dense_block_operators(tiny, residual):
    model, images = tiny
    records, _ = eval_mode_capture(model, images)
    assert [tuple(r.grid) for r in records] == [(8, 8), (8, 8), (4, 4), (2, 2), (2, 2)]
    expected = brute_force_rollout(records, residual)  # (2, 4, 64)
    maps = rollout(model, images, residual=residual)
    assert maps.grid == (8, 8) and maps.final_grid == (2, 2)
    np.testing.assert_allclose(maps.per_patch.reshape(2, 4, 64).numpy(), expected.numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(maps.pooled.reshape(2, 64).numpy(), expected.mean(1).numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(maps.patch(1, 0).reshape(2, 64).numpy(), expected[:, 2].numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(maps.pooled.sum((1, 2)).numpy(), 1.0, rtol=1e-6)


def gradients_at_merged_outputs(model, images, target):
    """Records, and d logit_target / d (each block's cross-merged scan output) by adding a zero tensor there."""
    zeros = []

    def add_zero(_module, args):
        zeros.append(torch.zeros_like(args[0], requires_grad=True))
        return (args[0] + zeros[-1],)

    ops = [m for m in model.modules() if isinstance(m, SS2D)]
    hooks = [op.out_norm.register_forward_pre_hook(add_zero) for op in ops]
    model.eval()
    try:
        with capture_ssm(model) as records:
            logits = model(images)
        grads = torch.autograd.grad(logits[torch.arange(len(images)), target].sum(), zeros)
    finally:
        for hook in hooks:
            hook.remove()
    return records, [g.flatten(1, 2).transpose(1, 2) for g in grads]  # (b, d, L) raster


def test_attribution_equals_brute_force_gradient_weighted_product(tiny):
    model, images = tiny
    target = torch.tensor([1, 3])
    records, grads = gradients_at_merged_outputs(model, images, target)
    operators = []
    for record, g in zip(records, grads):
        merged, u = dense_channel_operators(record)
        weighted = (g[:, :, :, None] * merged * u[:, :, None, :]).clamp_min(0).mean(1)  # (b, L, L)
        np.testing.assert_allclose(gradient_weighted_attention(record, g).numpy(), weighted.numpy(),
                                   rtol=1e-5, atol=1e-9 * weighted.abs().max().item())
        assert weighted.sum() > 0
        operators.append(weighted / weighted.sum(-1).mean(-1)[:, None, None])
    expected = brute_force_rollout(records, 0.5, operators).mean(1)
    expected = expected / expected.sum(-1, keepdim=True)
    maps = attribution(model, images, target=target)
    np.testing.assert_allclose(maps.pooled.reshape(2, 64).numpy(), expected.numpy(), rtol=1e-5, atol=1e-9)
    # the predicted class by default
    predicted = model(images).argmax(1)
    default = attribution(model, images).pooled
    np.testing.assert_allclose(default.numpy(), attribution(model, images, target=predicted).pooled.numpy())


def test_rollout_rejects_bad_requests(tiny):
    model, images = tiny
    with pytest.raises(ValueError, match="residual must be in"):
        rollout(model, images, residual=1.0)
    maps = rollout(model, images)
    with pytest.raises(ValueError, match="outside the final grid 2x2"):
        maps.patch(2, 0)
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 4\)"):
        attribution(model, images, target=[0, 7])


# ------------------------------------------------------------------ a model whose output reads one patch


class OnePatchNet(nn.Module):
    """Output = f(pixels of stage-0 patch ``key``) only, through a real SS2D whose scan attends to that patch.

    Non-overlapping 4x4 patch embedding into a content channel, plus a fixed marker channel (1 at ``key``).
    Inside the SS2D: identity depthwise conv (conv bias makes a constant channel), delta = softplus(3 u_marker
    - 30) ~ 1e-13 off the key, ~0.7 on it, A ~ 0, B = C = the constant channel, D = 0. So every query's scan
    output is (number of routes reaching it after the key) x const x u[key], and after out_norm (scale
    invariant) the same function of the key patch everywhere. No residual path.
    """

    def __init__(self, key=(2, 5), grid=(8, 8), classes=3):
        super().__init__()
        self.grid, self.key = grid, key
        self.embed = nn.Conv2d(3, 1, 4, stride=4, bias=False)
        marker = torch.zeros(1, *grid)
        marker[0, key[0], key[1]] = 1.0
        self.register_buffer("marker", marker)
        self.op = SS2D(d_model=2, d_state=1, ssm_ratio=1.5, dt_rank=1, conv_bias=True, ordering="row_major",
                       scan_backend="torch")
        self.head = nn.Linear(2, classes)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.embed.weight.fill_(0.1)
            self.op.in_proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 10.0], [0.0, 0.0]]))
            self.op.conv2d.weight.zero_()
            self.op.conv2d.weight[:, 0, 1, 1] = 1.0
            self.op.conv2d.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
            self.op.x_proj_weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]).expand(4, 3, 3))
            self.op.dt_projs_weight.fill_(3.0)
            self.op.dt_projs_bias.fill_(-30.0)
            self.op.A_logs.fill_(-20.0)
            self.op.Ds.zero_()
            self.op.out_proj.weight.copy_(torch.randn(2, 3, generator=gen))
            self.head.weight.copy_(5 * torch.randn(classes, 2, generator=gen))

    def forward(self, images):
        content = self.embed(images)
        x = torch.cat([content, self.marker.expand(len(images), -1, -1, -1)], 1).permute(0, 2, 3, 1)
        return self.head(self.op(x).mean((1, 2)))


@pytest.fixture(scope="module")
def one_patch():
    torch.manual_seed(1)
    model = OnePatchNet()
    images = torch.randn(3, 3, 32, 32)
    images[:, :, 8:12, 20:24] = 3.0  # the key patch (2, 5), bright: far from the zero (mean) baseline
    return model, images


def test_constructed_model_reads_only_its_key_patch(one_patch):
    """The construction itself: changing any other patch leaves the output unchanged; the key patch changes it."""
    model, images = one_patch
    with torch.no_grad():
        out = model(images)
        other = images.clone()
        other[:, :, :8] = torch.randn_like(other[:, :, :8])  # rows 0-1 of patches
        other[:, :, 8:12, :20] = 0.0
        torch.testing.assert_close(model(other), out, rtol=1e-5, atol=1e-5)
        key_changed = images.clone()
        key_changed[:, :, 8:12, 20:24] = 0.0
        assert (model(key_changed) - out).abs().max() > 0.5


@pytest.mark.parametrize("method", ["rollout", "attribution"])
def test_maps_put_their_mass_on_the_only_patch_the_output_reads(one_patch, method):
    model, images = one_patch
    make = rollout if method == "rollout" else attribution
    key = 2 * 8 + 5
    full = make(model, images, residual=0.0).pooled.reshape(3, 64)
    assert (full.argmax(1) == key).all()
    assert (full[:, key] > 0.99).all(), full[:, key]
    half = make(model, images).pooled.reshape(3, 64)  # identity weight 0.5: half the mass stays uniform
    assert (half.argmax(1) == key).all()
    np.testing.assert_allclose(half[:, key].numpy(), 0.5 + 0.5 / 64, atol=1e-3)


def test_deletion_of_the_key_patch_first_drops_the_curve_at_the_first_step(one_patch):
    model, images = one_patch
    maps = rollout(model, images).pooled
    curves = deletion_insertion(model, images, maps, baseline=torch.zeros(3), steps=None)
    first_drop = curves.deletion[:, 0] - curves.deletion[:, 1]
    assert (first_drop > 0.3).all(), curves.deletion[:, :3]
    np.testing.assert_allclose(curves.deletion[:, 1:], curves.deletion[:, 1:2].repeat(64, 1), atol=1e-5)
    # insertion: the key patch alone restores the prediction
    np.testing.assert_allclose(curves.insertion[:, 1], curves.insertion[:, -1], atol=1e-5)
    # a map that puts the key patch last deletes nothing that matters until the end
    reverse = deletion_insertion(model, images, -maps, baseline=torch.zeros(3), steps=None)
    np.testing.assert_allclose(reverse.deletion[:, :-1], reverse.deletion[:, :1].repeat(64, 1), atol=1e-5)
    assert (curves.deletion_auc < reverse.deletion_auc - 0.3).all()
