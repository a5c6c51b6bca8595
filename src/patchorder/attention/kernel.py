"""Exact hidden attention of selective scans, evaluated straight into patch space with no positive exponent.

For one channel with S = cumsum(delta) (kept in float64),
    alpha[i, j] = sum_n C[i, n] exp(A_n (S_i - S_j)) delta_j B[j, n]   for j <= i, else 0.
The sequence is cut into segments of T positions. For a query i in segment a (first position s_a) and a key
j in an earlier segment, the pivot S_{s_a} lies between S_j and S_i, so
    exp(A (S_i - S_j)) = exp(A (S_i - S_{s_a})) * exp(A (S_{s_a} - S_j)),   both exponents <= 0:
    query factor  U[i, n]    = C[i, n] exp(A_n (S_i - S_{s_a}))
    key table     W[a, n, j] = exp(A_n (S_{s_a} - S_j)) delta_j B[j, n]    (zero unless j < s_a)
and every such entry is sum_n U[i, n] W[a(i), n, j]: a weighted sum of table rows. ``embedding_bag`` forms
those sums directly in patch space (the table's columns are indexed by patch; each query patch picks, per
route, the row of its segment), which also merges the routes in the same pass. Pairs inside one segment are
evaluated from direct differences and scattered in. Cost O(L^2 K n) multiply-adds, memory O(L^2) for the
reduced result plus a bounded working chunk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from patchorder.attention.parallel import each_on_its_core

MERGES = ("sum", "none")
REDUCES = ("mean_abs", "mean", "none")
DEFAULT_CHUNK_MB = 64
# Row blocks of the embedding_bag output stay bounded so the allocator reuses them (fresh large buffers cost
# page faults that dominate the run time). 8 MB: VMamba-T's stage 0-2 blocks on 2 images, one image per core, four
# alternating repeats: median 6.5 s, against 7.1 s at 16 MB and 7.2 / 7.7 s with both cores on each op at 8 / 16 MB.
_ROW_BLOCK_BYTES = 8 << 20


@dataclass
class RouteLayout:
    """Where each route puts each patch, and the within-segment pairs, shared by all channels and images.

    The within-segment pairs (query position i, key position j <= i, same segment) of every route are listed
    once, sorted by query patch, so that a block of query rows owns a contiguous slice of them.
    """

    length: int
    segment: int
    num_segments: int
    pos: torch.Tensor  # (K, L) sequence position of patch q in route r
    seg_of_patch: torch.Tensor  # (K, L) segment of that position
    before: torch.Tensor  # (K, M, L) bool: key patch k lies in a segment before segment a of route r
    pair_src: torch.Tensor  # (E,) index of the pair in a flattened (K, M, T, T) array of one channel
    pair_route: torch.Tensor  # (E,) r
    pair_row: torch.Tensor  # (E,) query patch routes[r, i], ascending
    pair_col: torch.Tensor  # (E,) key patch routes[r, j]
    row_ptr: torch.Tensor  # (L + 1,) pairs of query patch q are pair_*[row_ptr[q]:row_ptr[q + 1]]

    def to(self, device: torch.device) -> RouteLayout:
        """Index tensors on ``device``; ``row_ptr`` stays on the CPU because the loops read it."""
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) and k != "row_ptr" else v
                 for k, v in vars(self).items()}
        return RouteLayout(**moved)


def route_layout(routes: torch.Tensor, segment: int | None = None) -> RouteLayout:
    routes = routes.long().cpu()
    K, L = routes.shape
    T = segment or max(1, math.isqrt(L - 1) + 1)  # ~sqrt(L) balances the table (M L) and the segments (L T)
    M = -(-L // T)
    pos = torch.argsort(routes, dim=1)
    seg_of_patch = pos // T
    before = seg_of_patch[:, None, :] < torch.arange(M)[None, :, None]
    seq = torch.arange(M * T).view(M, T)  # positions by segment (the last one padded past L)
    i, j = seq[:, :, None].expand(M, T, T), seq[:, None, :].expand(M, T, T)
    within = (j <= i) & (i < L)  # every (query, key) pair of a segment with the key not after the query
    src = torch.arange(M * T * T).view(M, T, T)[within]
    i, j = i[within], j[within]
    route = torch.arange(K).repeat_interleave(len(i))
    rows = routes[route, i.repeat(K)]
    cols = routes[route, j.repeat(K)]
    src = src.repeat(K) + route * (M * T * T)
    order = torch.argsort(rows, stable=True)
    row_ptr = torch.zeros(L + 1, dtype=torch.long)
    row_ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=L), 0)
    return RouteLayout(L, T, M, pos, seg_of_patch, before, src[order], route[order], rows[order], cols[order], row_ptr)


def _within_segment_values(S, A, dB, C, layout: RouteLayout, dtype) -> torch.Tensor:
    """(ch, E): alpha of every within-segment pair of the layout, from direct differences of S.

    S (ch, K, L) float64; A (ch, K, n); dB, C (ch, K, n, L). Computed densely per segment (T x T), then the
    pairs with key <= query are picked in the layout's order.
    """
    ch, K, L = S.shape
    T, M = layout.segment, layout.num_segments
    n = A.shape[-1]
    pad = M * T - L
    S = F.pad(S, (0, pad), mode="replicate").view(ch, K, M, T)
    gap = torch.empty(ch, K, M, T, T, dtype=dtype, device=S.device)
    torch.sub(S[..., :, None], S[..., None, :], out=gap)  # float64 difference, rounded once
    gap.clamp_min_(0)  # keys after the query (never picked) would otherwise have a positive exponent
    C = F.pad(C.to(dtype), (0, pad)).view(ch, K, n, M, T)
    dB = F.pad(dB, (0, pad)).view(ch, K, n, M, T)
    values = None
    for k in range(n):
        term = gap * A[:, :, k, None, None, None]
        term.exp_().mul_(C[:, :, k, :, :, None]).mul_(dB[:, :, k, :, None, :])
        values = term if values is None else values.add_(term)
    return torch.index_select(values.view(ch, -1), 1, layout.pair_src)


def _key_table(S, A, dB, layout: RouteLayout, dtype) -> torch.Tensor:
    """(ch * K * M * n, L): row (c, r, a, n) holds exp(A_n (P_a - S_k)) delta_k B_k at key patch k, zero unless
    k comes before segment a in route r (P_a = S at segment a's first position)."""
    ch, K, L = S.shape
    T, M = layout.segment, layout.num_segments
    n = A.shape[-1]
    pos = layout.pos.expand(ch, K, L)
    S_key = S.gather(2, pos)  # (ch, K, L) in patch order
    pivots = S[..., ::T]  # (ch, K, M)
    gap = torch.empty(ch, K, M, 1, L, dtype=dtype, device=S.device)
    torch.sub(pivots[..., None, None], S_key[:, :, None, None, :], out=gap)  # float64 difference, rounded once
    gap.clamp_min_(0)  # keys from segment a on (masked below) would otherwise have a positive exponent
    table = gap * A[:, :, None, :, None] if n > 1 else gap.mul_(A[:, :, None, :, None])  # (ch, K, M, n, L)
    table.exp_()
    table.mul_(dB.gather(3, pos[:, :, None, :].expand_as(dB))[:, :, None])
    table.masked_fill_(~layout.before[None, :, :, None, :], 0)
    return table.view(-1, L)


def _query_factor(S, A, C, layout: RouteLayout, dtype) -> torch.Tensor:
    """U[c, r, q, n] = C exp(A_n (S_i - P_a)) at i = position of patch q in route r: (ch, K, L, n)."""
    ch, K, L = S.shape
    T = layout.segment
    pivot_of_pos = S[..., ::T].repeat_interleave(T, dim=-1)[..., :L]
    U = C.to(dtype) * torch.exp((S - pivot_of_pos).to(dtype)[:, :, None, :] * A[..., None])  # (ch, K, n, L)
    return U.gather(3, layout.pos[None, :, None, :].expand_as(U)).transpose(2, 3).contiguous()


@torch.no_grad()
def patch_attention(
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    routes: torch.Tensor,
    merge: str = "sum",
    reduce: str = "mean_abs",
    chunk_mb: float = DEFAULT_CHUNK_MB,
    segment: int | None = None,
) -> torch.Tensor:
    """Hidden attention of K routed scans, in patch space. Inputs are validated by the callers.

    delta (b, K, d, L) >= 0; A (K, d, n) <= 0; B, C (b, K, g, n, L) with g dividing d; routes (K, L).
    Returns merge "sum": (b, L, L) or, with reduce "none", (b, d, L, L); merge "none": (b, K, L, L) or
    (b, K, d, L, L). Float64 in, float64 out; anything else is computed in float32.
    """
    b, K, d, L = delta.shape
    n = A.shape[-1]
    dtype = torch.float64 if delta.dtype == torch.float64 else torch.float32
    device = delta.device
    layout = route_layout(routes, segment).to(device)
    T, M = layout.segment, layout.num_segments
    delta, A, B, C = (x.to(dtype) for x in (delta, A, B, C))  # half precision inputs are computed in float32
    groups_per = d // B.shape[2]
    item = torch.finfo(dtype).bits // 8
    # Working set per channel: key table and its gaps, the dense within-segment values, query factors.
    per_channel = (K * M * L + K * M * T * T) * (2 * n + 1) * item + K * L * (n * item + 24)
    ch = int(max(1, min(d, chunk_mb * 2**20 // per_channel)))
    route_dim = 1 if merge == "sum" else K
    rows = int(max(1, min(L, _ROW_BLOCK_BYTES // (ch * route_dim * L * item))))

    if reduce == "none":
        shape = (b, d, L, L) if merge == "sum" else (b, K, d, L, L)
    else:
        shape = (b, L, L) if merge == "sum" else (b, K, L, L)
    out = torch.zeros(shape, dtype=dtype, device=device)
    ones = torch.ones(1, ch, dtype=dtype, device=device)
    seg_base = torch.arange(K, device=device)[:, None] * M + layout.seg_of_patch  # (K, L): table row of (r, a)
    bag_base = (seg_base[..., None] * n + torch.arange(n, device=device)).transpose(0, 1)  # (L, K, n)

    def one_image(bi: int) -> None:
        for c0 in range(0, d, ch):
            c1 = min(d, c0 + ch)
            nc = c1 - c0
            # Channel-major (ch, K, ...) layouts; S in float64: a float32 cumsum is off by ~1e-5 at L = 3136.
            S = torch.cumsum(delta[bi, :, c0:c1].transpose(0, 1).double(), dim=-1)  # (nc, K, L)
            group = torch.arange(c0, c1, device=device) // groups_per
            B_c = B[bi][:, group].transpose(0, 1)  # (nc, K, n, L)
            C_c = C[bi][:, group].transpose(0, 1)
            A_c = A[:, c0:c1].transpose(0, 1)  # (nc, K, n)
            dB = (delta[bi, :, c0:c1, None, :].transpose(0, 1) * B_c).to(dtype)
            table = _key_table(S, A_c, dB, layout, dtype)
            U = _query_factor(S, A_c, C_c, layout, dtype)  # (nc, K, L, n)
            inside = _within_segment_values(S, A_c, dB, C_c, layout, dtype)  # (nc, E)
            chan_offset = torch.arange(nc, device=device).view(nc, 1, 1, 1) * (K * M * n)
            for q0 in range(0, L, rows):
                q1 = min(L, q0 + rows)
                R = q1 - q0
                idx = bag_base[q0:q1] + chan_offset  # (nc, R, K, n)
                w = U[:, :, q0:q1]  # (nc, K, R, n)
                if merge == "sum":  # one bag per (channel, query): every route and state summed
                    block = F.embedding_bag(idx.reshape(nc * R, K * n), table,
                                            per_sample_weights=w.transpose(1, 2).reshape(nc * R, K * n), mode="sum")
                else:  # one bag per (channel, route, query)
                    block = F.embedding_bag(idx.transpose(1, 2).reshape(nc * K * R, n), table,
                                            per_sample_weights=w.reshape(nc * K * R, n), mode="sum")
                block = block.view(nc, -1)
                e0, e1 = layout.row_ptr[q0].item(), layout.row_ptr[q1].item()
                if e1 > e0:
                    local = (layout.pair_row[e0:e1] - q0) * L + layout.pair_col[e0:e1]
                    if merge == "none":
                        local = local + layout.pair_route[e0:e1] * (R * L)
                    block.index_add_(1, local, inside[:, e0:e1])
                block = block.view(nc, route_dim, R, L) if merge == "none" else block.view(nc, R, L)
                if reduce == "none":
                    if merge == "sum":
                        out[bi, c0:c1, q0:q1] = block
                    else:
                        out[bi, :, c0:c1, q0:q1] = block.transpose(0, 1)
                    continue
                if reduce == "mean_abs":
                    block.abs_()
                if merge == "sum":  # the channel sum as a (1 x nc) @ (nc x R L) product: one pass over the
                    # block, 15% faster on VMamba-T's stage 0 than nc in-place adds (the target rows are contiguous)
                    out[bi, q0:q1].view(1, -1).addmm_(ones[:, :nc], block.reshape(nc, -1))
                    continue
                target = out[bi, :, q0:q1, :]  # (K, R, L), strided across routes
                for channel in block:  # in-place adds: no temporary for the channel sum
                    target += channel
    if device.type == "cpu":
        each_on_its_core(one_image, b)
    else:
        for bi in range(b):
            one_image(bi)
    if reduce != "none":
        out /= d
    return out
