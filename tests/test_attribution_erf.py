"""effective_receptive_field against a direct per-image Jacobian, and its growth with depth under local mixing."""
import numpy as np
import pytest
import timm
import torch

from patchorder.attention import effective_receptive_field
from patchorder.models import SS2D


@pytest.fixture(scope="module")
def micro64():
    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", ordering="hilbert", num_classes=3, dims=(8, 8, 8, 8)).double().eval()
    return model, torch.randn(2, 3, 32, 32, dtype=torch.float64)


def jacobian_erf(model, images, stage):
    """Per image: the Jacobian of the stage's centre output (read by a hook on the full forward pass) with
    respect to the image; S's gradient is the sum of the rows whose output is positive."""
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    for image in images:
        seen = {}
        hook = model.layers[stage].blocks.register_forward_hook(lambda _m, _a, out: seen.update(out=out))

        def centre(x):
            model(x[None])
            out = seen["out"][0]  # (h, w, C) channels-last
            return out[out.shape[0] // 2, out.shape[1] // 2]

        try:
            value = centre(image)
            jac = torch.autograd.functional.jacobian(centre, image)  # (C, 3, H, W)
        finally:
            hook.remove()
        grad = jac[value > 0].sum(0)
        total += grad.clamp_min(0).sum(0)
    return total


@pytest.mark.parametrize("stage", [0, -1])
def test_erf_equals_the_direct_jacobian_computation(micro64, stage):
    model, images = micro64
    erf = effective_receptive_field(model, images, stage=stage)
    expected = jacobian_erf(model, images, stage)
    assert erf.shape == (32, 32)
    np.testing.assert_allclose(erf.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)
    assert expected.sum() > 0


def local_box(model, stage, size):
    """Input pixels the centre output of ``stage`` can depend on when every scan is off: the 3x3 convs only."""
    start, end, jump = 0, 0, 1
    for _ in range(2):  # patch embedding: two 3x3 stride-2 convs
        start, end, jump = start - jump, end + jump, 2 * jump
    for s in range(stage + 1):
        if s > 0:  # the 3x3 stride-2 downsampling before stage s
            start, end, jump = start - jump, end + jump, 2 * jump
        start, end = start - jump * model.depths[s], end + jump * model.depths[s]  # each block's depthwise 3x3
    centre = (size // jump) // 2
    return max(0, jump * centre + start), min(size - 1, jump * centre + end)


def support(erf):
    rows, cols = np.nonzero(erf.numpy())
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_erf_grows_with_depth_and_stays_inside_the_receptive_field_of_local_mixing():
    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", num_classes=3, dims=(8, 8, 8, 8), depths=(2, 1, 2, 1)).eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():  # C = 0: every scan outputs only its D skip, so blocks mix patches only by their conv
        for op in model.modules():
            if isinstance(op, SS2D):
                op.x_proj_weight[:, op.dt_rank + op.d_state:] = 0
    extents = []
    for stage in range(4):
        erf = effective_receptive_field(model, images, stage=stage)
        lo, hi = local_box(model, stage, 96)
        r0, r1, c0, c1 = support(erf)
        assert lo <= r0 and r1 <= hi and lo <= c0 and c1 <= hi, (stage, (lo, hi), (r0, r1, c0, c1))
        extents.append(max(r1 - r0, c1 - c0))
    assert extents[0] < extents[1] < extents[2] <= extents[3], extents
    assert extents[0] >= 10  # the stage-0 box is 23 px wide: the field fills most of it


def test_with_the_scan_on_the_field_reaches_beyond_the_local_box():
    """The control for the test above: the scans mix distant patches, so the same box does not hold."""
    torch.manual_seed(0)
    model = timm.create_model("vmamba_micro", num_classes=3, dims=(8, 8, 8, 8), depths=(2, 1, 2, 1)).eval()
    erf = effective_receptive_field(model, torch.randn(2, 3, 96, 96), stage=0)
    lo, hi = local_box(model, 0, 96)
    r0, r1, c0, c1 = support(erf)
    assert r0 < lo or r1 > hi or c0 < lo or c1 > hi


def test_erf_rejects_bad_requests(micro64):
    model, images = micro64
    with pytest.raises(ValueError, match="stage=4 but the model has 4 stages"):
        effective_receptive_field(model, images, stage=4)
    with pytest.raises(ValueError, match="contains no patchorder VMamba"):
        effective_receptive_field(torch.nn.Linear(2, 2), images)
