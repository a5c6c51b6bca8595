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

MERGES = ("sum", "none")
REDUCES = ("mean_abs", "mean", "none")
DEFAULT_CHUNK_MB = 64
# Row blocks of the embedding_bag output stay small so the allocator reuses them (fresh large buffers cost
# page faults that dominate the run time) and they stay in cache while abs and the channel sum run.
_ROW_BLOCK_BYTES = 4 << 20


@dataclass
class RouteLayout:
    """Where each route puts each patch, and the within-segment pairs, shared by all channels and images."""

    length: int
    segment: int
    num_segments: int
    pos: torch.Tensor  # (K, L) sequence position of patch q in route r
    seg_of_patch: torch.Tensor  # (K, L) segment of that position
    diag_src: torch.Tensor  # (E,) index into the flattened (K, M, T, T) within-segment values
    diag_route: torch.Tensor  # (E,) route of the entry
    diag_row: torch.Tensor  # (E,) query patch, entries sorted by it
    diag_col: torch.Tensor  # (E,) key patch
    row_ptr: torch.Tensor  # (L + 1,) entries of query patch q are diag_*[row_ptr[q]:row_ptr[q + 1]]

    @property
    def num_routes(self) -> int:
        return self.pos.shape[0]

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
    seq = torch.arange(M * T).view(M, T)
    i, j = seq[:, :, None].expand(M, T, T), seq[:, None, :].expand(M, T, T)
    valid = (j <= i) & (i < L)
    src_in_route = torch.arange(M * T * T).view(M, T, T)[valid]
    i, j = i[valid], j[valid]
    src = torch.cat([src_in_route + r * M * T * T for r in range(K)])
    rows = torch.cat([routes[r, i] for r in range(K)])
    cols = torch.cat([routes[r, j] for r in range(K)])
    route = torch.arange(K).repeat_interleave(i.numel())
    order = torch.argsort(rows, stable=True)
    rows = rows[order]
    row_ptr = torch.zeros(L + 1, dtype=torch.long)
    row_ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=L), 0)
    return RouteLayout(L, T, M, pos, pos // T, src[order], route[order], rows, cols[order], row_ptr)


def _channel_tensors(delta, A, B, C, c0, c1, groups_per):
    """Float64 cumsum and the per-channel B, C of channels [c0, c1) of every route: (K, ch, ...)."""
    S = torch.cumsum(delta[:, c0:c1].double(), dim=-1)  # (K, ch, L): float32 cumsum loses ~1e-3 at L = 3136
    g = torch.arange(c0, c1, device=delta.device) // groups_per
    return S, A[:, c0:c1], B[:, g], C[:, g]  # B, C: (K, ch, n, L)


def _within_segment_values(S, A, dB, C, layout: RouteLayout, dtype) -> torch.Tensor:
    """alpha[i, j] for i, j in the same segment, j <= i: (ch, K * M * T * T), zeros elsewhere."""
    K, ch, L = S.shape
    T, M = layout.segment, layout.num_segments
    pad = M * T - L
    S_pad = F.pad(S, (0, pad), mode="replicate").view(K, ch, M, T)
    diff = (S_pad[..., :, None] - S_pad[..., None, :]).clamp_min_(0)  # (K, ch, M, T, T); j > i masked below
    expo = diff[..., None] * A.double()[:, :, None, None, None, :]  # (K, ch, M, T, T, n), <= 0
    n = A.shape[-1]
    C_pad = F.pad(C, (0, pad)).view(K, ch, n, M, T).permute(0, 1, 3, 4, 2)  # (K, ch, M, T, n)
    dB_pad = F.pad(dB, (0, pad)).view(K, ch, n, M, T).permute(0, 1, 3, 4, 2)
    vals = (C_pad.double()[..., :, None, :] * expo.exp_() * dB_pad.double()[..., None, :, :]).sum(-1)
    vals = vals * torch.ones(T, T, dtype=torch.bool, device=S.device).tril()
    return vals.to(dtype).transpose(0, 1).reshape(ch, K * M * T * T)


def _key_table(S, A, dB, layout: RouteLayout, dtype) -> torch.Tensor:
    """W[c, r, a, n, k] = exp(A_n (P_a - S_pos)) delta B at key patch k of route r, zero unless it precedes segment a."""
    K, ch, L = S.shape
    T, M = layout.segment, layout.num_segments
    pos = layout.pos[:, None, :].expand(K, ch, L)
    S_key = S.gather(2, pos)  # (K, ch, L) in patch order
    pivots = S[..., ::T]  # (K, ch, M): S at each segment's first position
    diff = (pivots[..., :, None] - S_key[..., None, :]).clamp_min_(0).to(dtype)  # (K, ch, M, L)
    before = layout.seg_of_patch[:, None, :] < torch.arange(M, device=S.device)[:, None]  # (K, M, L)
    table = torch.exp(diff[:, :, :, None, :] * A[:, :, None, :, None])  # (K, ch, M, n, L)
    table *= (dB.gather(3, pos[:, :, None, :].expand_as(dB)))[:, :, None] * before[:, None, :, None, :]
    return table.transpose(0, 1).contiguous()  # (ch, K, M, n, L)


def _query_factor(S, A, C, layout: RouteLayout, dtype) -> torch.Tensor:
    """U[c, r, q, n] = C exp(A_n (S_i - P_a)) at i = position of patch q in route r."""
    K, ch, L = S.shape
    T = layout.segment
    pivot_of_pos = S[..., ::T].repeat_interleave(T, dim=-1)[..., :L]
    U = C * torch.exp((S - pivot_of_pos).to(dtype)[:, :, None, :] * A[..., None])  # (K, ch, n, L)
    pos = layout.pos[:, None, None, :].expand_as(U)
    return U.gather(3, pos).permute(1, 0, 3, 2).contiguous()  # (ch, K, L, n)


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
    A = A.to(dtype)
    groups_per = d // B.shape[2]
    item = torch.finfo(dtype).bits // 8
    # Working set per channel: key table + within-segment values (with their float64 intermediates) + factors.
    per_channel = K * n * (M * L * (item + 8) + M * T * T * 24 + L * 24)
    ch = int(max(1, min(d, chunk_mb * 2**20 // per_channel)))
    route_dim = 1 if merge == "sum" else K
    rows = int(max(1, min(L, _ROW_BLOCK_BYTES // (ch * route_dim * L * item))))

    if reduce == "none":
        shape = (b, d, L, L) if merge == "sum" else (b, K, d, L, L)
    else:
        shape = (b, L, L) if merge == "sum" else (b, K, L, L)
    out = torch.zeros(shape, dtype=dtype, device=device)
    seg_base = torch.arange(K, device=device)[:, None] * M + layout.seg_of_patch  # (K, L) table row of (route, segment)
    bag_base = (seg_base[..., None] * n + torch.arange(n, device=device)).transpose(0, 1)  # (L, K, n)

    for bi in range(b):
        for c0 in range(0, d, ch):
            c1 = min(d, c0 + ch)
            S, A_c, B_c, C_c = _channel_tensors(delta[bi], A, B[bi], C[bi], c0, c1, groups_per)
            dB = (delta[bi, :, c0:c1, None, :] * B_c).to(dtype)  # (K, ch, n, L)
            C_c = C_c.to(dtype)
            table = _key_table(S, A_c, dB, layout, dtype).view(-1, L)
            U = _query_factor(S, A_c, C_c, layout, dtype)  # (ch, K, L, n)
            inside = _within_segment_values(S, A_c, dB, C_c, layout, dtype)
            nc = c1 - c0
            chan_offset = torch.arange(nc, device=device).view(nc, 1, 1, 1) * (K * M * n)
            for q0 in range(0, L, rows):
                q1 = min(L, q0 + rows)
                R = q1 - q0
                idx = bag_base[q0:q1] + chan_offset  # (nc, R, K, n)
                w = U[:, :, q0:q1]  # (nc, K, R, n)
                if merge == "sum":  # one bag per (channel, query): all routes and states summed
                    block = F.embedding_bag(idx.reshape(nc * R, K * n), table,
                                            per_sample_weights=w.transpose(1, 2).reshape(nc * R, K * n), mode="sum")
                else:  # one bag per (channel, route, query)
                    block = F.embedding_bag(idx.transpose(1, 2).reshape(nc * K * R, n), table,
                                            per_sample_weights=w.reshape(nc * K * R, n), mode="sum")
                block = block.view(nc, -1)
                e0, e1 = layout.row_ptr[q0].item(), layout.row_ptr[q1].item()
                if e1 > e0:
                    local = (layout.diag_row[e0:e1] - q0) * L + layout.diag_col[e0:e1]
                    if merge == "none":
                        local = local + layout.diag_route[e0:e1] * (R * L)
                    block.index_add_(1, local, inside[:, layout.diag_src[e0:e1]])
                block = block.view(nc, route_dim, R, L) if merge == "none" else block.view(nc, R, L)
                if reduce == "none":
                    if merge == "sum":
                        out[bi, c0:c1, q0:q1] = block
                    else:
                        out[bi, :, c0:c1, q0:q1] = block.transpose(0, 1)
                else:
                    if reduce == "mean_abs":
                        block.abs_()
                    out[bi, ..., q0:q1, :] += block.sum(0)
    if reduce != "none":
        out /= d
    return out
