"""hidden_attention and block_attention against float64 brute force, the reference scan, and permutations."""
import pytest
import torch
import torch.nn.functional as F

import orderings
from patchorder.attention import block_attention, hidden_attention
from patchorder.attention.kernel import patch_attention
from patchorder.models.records import SSMRecord
from patchorder.ops import selective_scan


def brute_alpha(delta, A, B, C):
    """(b, d, l, l) float64: the defining formula with an explicit exp(A (S_i - S_j)) for every pair."""
    delta, A, B, C = (x.double() for x in (delta, A, B, C))
    d = delta.shape[1]
    B, C = B.repeat_interleave(d // B.shape[1], 1), C.repeat_interleave(d // C.shape[1], 1)
    S = delta.cumsum(-1)
    gap = S[..., :, None] - S[..., None, :]  # (b, d, i, j)
    causal = torch.ones(gap.shape[-2:], dtype=torch.bool).tril()
    decay = torch.exp(A[None, :, None, None, :] * gap.clamp_min(0)[..., None])  # (b, d, i, j, n)
    return torch.einsum("bdni,bdijn,bdj,bdnj->bdij", C, decay, delta, B) * causal


def reduce_channels(alpha, reduce, dim):
    if reduce == "none":
        return alpha
    return (alpha.abs() if reduce == "mean_abs" else alpha).mean(dim)


def random_scan(b, d, n, g, length, seed, dtype=torch.float32, log_delta=(-4.0, 0.0)):
    """Magnitudes like a trained Mamba: delta = softplus(N(mu, 1)), A = -(1..n) per channel, scaled."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.empty(1, d, 1).uniform_(*log_delta, generator=gen)
    delta = F.softplus(torch.randn(b, d, length, generator=gen) + mu)
    A = -torch.arange(1, n + 1, dtype=torch.float64).repeat(d, 1) * torch.empty(d, 1).uniform_(0.5, 2, generator=gen)
    B = torch.randn(b, g, n, length, generator=gen)
    C = torch.randn(b, g, n, length, generator=gen)
    return tuple(x.to(dtype) for x in (delta, A, B, C))


SHAPES = [  # b, d, n, g, l
    (1, 1, 1, 1, 1),
    (2, 3, 1, 1, 17),
    (1, 4, 4, 2, 33),
    (3, 6, 16, 3, 20),
    (2, 2, 2, 2, 64),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduce", ["none", "mean", "mean_abs"])
def test_hidden_attention_matches_float64_brute_force(shape, reduce):
    b, d, n, g, length = shape
    delta, A, B, C = random_scan(*shape, seed=sum(shape))
    expected = reduce_channels(brute_alpha(delta, A, B, C), reduce, dim=1)
    got = hidden_attention(delta, A, B, C, reduce=reduce)
    assert got.dtype == torch.float32
    assert got.shape == ((b, d, length, length) if reduce == "none" else (b, length, length))
    torch.testing.assert_close(got.double(), expected, rtol=2e-5, atol=2e-6 * expected.abs().max().item())
    got64 = hidden_attention(*(x.double() for x in (delta, A, B, C)), reduce=reduce)
    torch.testing.assert_close(got64, expected, rtol=1e-11, atol=1e-13)


def test_attention_times_input_is_the_scan_without_skip():
    """An oracle independent of the formula: the sequential reference scan in float64."""
    b, d, n, g, length = 2, 4, 3, 2, 40
    delta, A, B, C = random_scan(b, d, n, g, length, seed=7, dtype=torch.float64)
    u = torch.randn(b, d, length, dtype=torch.float64)
    D = torch.randn(d, dtype=torch.float64)
    y = selective_scan(u, delta, A, B, C, D=D, backend="reference")
    alpha = hidden_attention(delta, A, B, C, reduce="none")
    torch.testing.assert_close(torch.einsum("bcij,bcj->bci", alpha, u), y - D[None, :, None] * u)


@pytest.mark.parametrize("segment", [1, 2, 5, 64])
def test_segment_length_and_chunk_size_do_not_change_the_result(segment):
    delta, A, B, C = random_scan(2, 5, 2, 1, 29, seed=3)
    expected = brute_alpha(delta, A, B, C).abs().mean(1)
    args = (delta[:, None], A[None], B[:, None], C[:, None], torch.arange(29)[None])
    for chunk_mb in (0.001, 1000):
        got = patch_attention(*args, merge="none", reduce="mean_abs", chunk_mb=chunk_mb, segment=segment)[:, 0]
        torch.testing.assert_close(got.double(), expected, rtol=2e-5, atol=1e-7)


def test_long_sequence_with_large_delta_stays_finite_and_exact():
    """l = 4096 with delta up to ~8: exp(cumsum) ratios over/underflow here; sampled entries match float64."""
    length = 4096
    delta, A, B, C = random_scan(1, 2, 4, 1, length, seed=11, log_delta=(-1.0, 2.0))
    assert delta.double().sum(-1).max() * A.abs().max() > 3000  # e^{A S} is 0 in float32 (and float64) here
    alpha = hidden_attention(delta, A, B, C, reduce="none")[0]  # (d, l, l)
    assert torch.isfinite(alpha).all()
    gen = torch.Generator().manual_seed(0)
    i = torch.randint(0, length, (4000,), generator=gen)
    j = (i - torch.randint(0, 40, (4000,), generator=gen)).clamp_min(0)  # near the diagonal: the large entries
    j = torch.cat([j, torch.randint(0, length, (1000,), generator=gen)])
    i = torch.cat([i, torch.randint(0, length, (1000,), generator=gen)])
    S = delta[0].double().cumsum(-1)  # (d, l)
    for c in range(2):
        gap = (S[c, i] - S[c, j]).clamp_min(0)
        exact = (C[0, 0, :, i].double() * torch.exp(A[c].double()[:, None] * gap) * B[0, 0, :, j].double()).sum(0)
        exact = exact * delta[0, c, j].double() * (j <= i)
        torch.testing.assert_close(alpha[c, i, j].double(), exact, rtol=1e-5, atol=1e-6)
    assert (alpha[:, i, j] != 0).sum() > 1000  # the check above is not vacuous
    assert torch.triu(alpha[0], diagonal=1).abs().max() == 0


# ---------- block_attention: routes mapped back to patch space ----------


def random_record(height, width, ordering, scheme, b=2, d=3, n=2, seed=0, dtype=torch.float64):
    routes = orderings.routes(ordering, height, width, scheme)
    K, L = routes.shape
    delta, A, B, C = random_scan(b, K * d, n, K, L, seed=seed, dtype=dtype)
    # The scan input of route k is the feature map read along route k, as VMamba's cross-scan does.
    x = torch.randn(b, d, L, dtype=dtype, generator=torch.Generator().manual_seed(seed + 1))
    u = torch.cat([x[:, :, routes[k]] for k in range(K)], dim=1)
    D = torch.randn(K * d, dtype=dtype)
    y = selective_scan(u, delta, A, B, C, D=D, backend="reference")
    record = SSMRecord(stage=0, block=0, grid=(height, width), ordering=str(ordering), scheme=scheme, routes=routes,
                       u=u, delta=delta, A=A, B=B, C=C, D=D, y=y)
    return record, x


def brute_block(record):
    """(b, K, d, L, L) float64 per route in patch space via explicit permutation matrices."""
    K, L = record.routes.shape
    b = record.delta.shape[0]
    d = record.delta.shape[1] // K
    out = []
    for k in range(K):
        rows = slice(k * d, (k + 1) * d)
        alpha = brute_alpha(record.delta[:, rows], record.A[rows], record.B[:, k:k + 1], record.C[:, k:k + 1])
        P = torch.zeros(L, L, dtype=torch.float64)
        P[torch.arange(L), record.routes[k]] = 1  # P[s, q] = 1 when route k visits patch q at step s
        out.append(P.T @ alpha @ P)  # attn[q, p] = alpha[pos(q), pos(p)]
    return torch.stack(out, 1).reshape(b, K, d, L, L)


@pytest.mark.parametrize("grid,ordering,scheme", [
    ((3, 4), "row_major", "cross4"),
    ((5, 5), "column_major", "bidirectional"),
    ((4, 3), "row_major", "single"),
    ((1, 6), "row_major", "cross4"),
])
@pytest.mark.parametrize("merge", ["sum", "none"])
@pytest.mark.parametrize("reduce", ["none", "mean", "mean_abs"])
def test_block_attention_matches_per_route_brute_force(grid, ordering, scheme, merge, reduce):
    record, _ = random_record(*grid, ordering, scheme, seed=len(scheme) + grid[0])
    per_route = brute_block(record)  # (b, K, d, L, L)
    if merge == "sum":
        expected = reduce_channels(per_route.sum(1), reduce, dim=1)
    else:
        expected = reduce_channels(per_route, reduce, dim=2)
    record32 = SSMRecord(**{k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                            for k, v in vars(record).items()})
    got = block_attention(record32, merge=merge, reduce=reduce)
    torch.testing.assert_close(got.double(), expected, rtol=2e-5, atol=2e-6 * expected.abs().max().item())


def test_block_attention_with_random_permutations_as_routes():
    record, _ = random_record(4, 4, "row_major", "cross4", seed=5)
    gen = torch.Generator().manual_seed(9)
    record.routes = torch.stack([torch.randperm(16, generator=gen) for _ in range(4)])
    torch.testing.assert_close(block_attention(record, merge="none", reduce="none"), brute_block(record))


def test_merged_block_operator_reproduces_the_cross_merged_output():
    """sum over routes of (y - D u) scattered back to the grid == merged attention applied to the feature map."""
    record, x = random_record(4, 5, "row_major", "cross4", d=3, seed=2)
    K, L = record.routes.shape
    d = x.shape[1]
    merged_y = torch.zeros_like(x)
    skip_free = record.y - record.D[None, :, None] * record.u
    for k in range(K):
        merged_y[:, :, record.routes[k]] += skip_free[:, k * d:(k + 1) * d]
    attn = block_attention(record, merge="sum", reduce="none")  # (b, d, L, L)
    torch.testing.assert_close(torch.einsum("bcqk,bck->bcq", attn, x), merged_y)


@pytest.mark.parametrize("reduce", ["mean_abs", "mean"])
def test_row_blocks_do_not_change_the_result(monkeypatch, reduce):
    """The output is built a few query rows at a time; one row a block must give what one block of all rows
    gives, for merged and per-route results (whose targets are strided across routes)."""
    from patchorder.attention import kernel

    record, _ = random_record(6, 5, "row_major", "cross4", d=3, seed=4)
    whole = {merge: block_attention(record, merge=merge, reduce=reduce) for merge in ("sum", "none")}
    monkeypatch.setattr(kernel, "_ROW_BLOCK_BYTES", 1)  # one query row a block
    for merge, expected in whole.items():
        torch.testing.assert_close(block_attention(record, merge=merge, reduce=reduce), expected)


def test_a_batch_on_one_thread_per_image_is_each_image_alone_and_restores_torch_threads():
    """patch_attention runs a CPU batch one image per core (torch single-threaded meanwhile): each image must be
    what it is computed alone, and torch's thread count must come back, also after an error."""
    from patchorder.attention import parallel

    delta, A, B, C = random_scan(3, 4, 2, 1, 37, seed=9)
    threads = torch.get_num_threads()
    batch = hidden_attention(delta, A, B, C, reduce="mean_abs")
    alone = torch.cat([hidden_attention(delta[i:i + 1], A, B[i:i + 1], C[i:i + 1], reduce="mean_abs")
                       for i in range(3)])
    torch.testing.assert_close(batch, alone, rtol=1e-6, atol=0)
    assert torch.get_num_threads() == threads

    def fails(i: int) -> None:
        raise RuntimeError(f"image {i}")

    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="image"):
            parallel.each_on_its_core(fails, 3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_row_major_route_zero_is_lower_triangular_in_raster_space():
    record, _ = random_record(3, 3, "row_major", "cross4", seed=1)
    per_route = block_attention(record, merge="none", reduce="mean_abs")[0]  # (K, L, L)
    assert torch.triu(per_route[0], 1).abs().max() == 0  # forward raster scan: keys never after the query
    assert torch.tril(per_route[2], -1).abs().max() == 0  # its reverse: keys never before
    assert (per_route[0].diagonal() > 0).all()


# ---------- bad input ----------


def test_bad_inputs_raise_clear_errors():
    delta, A, B, C = random_scan(1, 2, 2, 1, 8, seed=0)
    with pytest.raises(ValueError, match="delta must be finite and >= 0"):
        hidden_attention(-delta, A, B, C)
    with pytest.raises(ValueError, match=r"A must be finite and <= 0.*A_logs"):
        hidden_attention(delta, -A, B, C)
    with pytest.raises(ValueError, match="B must be"):
        hidden_attention(delta, A, B[..., :5], C)
    with pytest.raises(ValueError, match="A must be"):
        hidden_attention(delta, A[:1], B, C)
    with pytest.raises(ValueError, match="unknown reduce 'max'"):
        hidden_attention(delta, A, B, C, reduce="max")
    record, _ = random_record(2, 2, "row_major", "cross4")
    with pytest.raises(ValueError, match="unknown merge 'avg'"):
        block_attention(record, merge="avg")
    record.grid = (2, 3)
    with pytest.raises(ValueError, match=r"grid \(2, 3\) has 6 patches but routes have 4"):
        block_attention(record)


MEMORY_PROBE = """
import resource, torch, torch.nn.functional as F
from patchorder.attention import hidden_attention
torch.set_num_threads(1)  # memory is what is measured; one thread avoids oversubscribing a busy machine
b, d, n, l = 1, 192, 1, 768
delta = F.softplus(torch.randn(b, d, l) - 2)
A, B, C = -torch.ones(d, n), torch.randn(b, 1, n, l), torch.randn(b, 1, n, l)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = hidden_attention(delta, A, B, C, reduce="mean_abs", chunk_mb=16)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, bool(torch.isfinite(out).all()))
"""


@pytest.mark.slow
def test_reduced_attention_never_holds_every_channel():
    """Peak memory of a channel-reduced result is O(l^2) + chunk, not O(d l^2) (192 x 768^2 floats = 450 MB)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, check=True)
    grown_mb, finite = result.stdout.split()
    assert finite == "True"
    assert float(grown_mb) < 150, f"peak RSS grew by {grown_mb} MB"
