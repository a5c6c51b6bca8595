"""The selective scan as Triton kernels: JIT-compiled on the user's GPU, nothing to build at install time.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = <C_t, h_t> + D * u_t

Written from the recurrence, not from another project's kernel:

* One program per (batch, group of B/C, block of BLOCK_D channels of that group) holds the state
  (BLOCK_D, d_state) in float32 registers and steps through time. Every decay exp(delta * A) lies in [0, 1]
  when delta >= 0 and A <= 0; nothing takes a ratio of exponentials or an exp of a cumulative sum, so any
  length stays finite. Inputs may be float32, bfloat16 or float16: each value is widened to float32 on load.
* The forward saves the state at the end of every CHUNK steps. The backward walks the chunks from last to
  first: it recomputes a chunk's states from the saved one (writing each step's previous state to a small
  per-program scratch buffer, so the reverse pass can read h_{t-1} without a ratio), then runs the adjoint
  recurrence lam_t = C_t dy_t + exp(delta_{t+1} A) lam_{t+1} backwards through the chunk.
* Gradients summed over a group's channels (dB, dC) are written per channel block and summed by torch;
  those summed over batch and time (dA, dD, d delta_bias) are accumulated in registers per program and
  summed over the batch by torch. No atomics: results are deterministic.
* Under TRITON_INTERPRET=1 (set before this module is imported) the same kernels run on CPU tensors, slowly:
  that is how the test suite checks them on machines without a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Steps between saved states: memory of the saved states is (b, d, n, L / CHUNK) floats, and the backward's
# scratch buffer is (programs, CHUNK, BLOCK_D, n + 2) floats.
CHUNK = 64
# Aim for this many state entries (channels x padded d_state) per program: a few per thread of a warp or two.
STATE_ENTRIES_PER_PROGRAM = 256
MAX_BLOCK_D = 32
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Whether the kernels below were built for the interpreter (CPU tensors) or for a GPU: fixed at import time.
INTERPRETED = bool(triton.knobs.runtime.interpret)


# tl.sum is a device function; the interpreter pays a large fixed cost on every device-function call, so the
# hot loops call tl.reduce with tl.sum's own combine function (which compiles to the same code on a GPU).
_add = tl.standard._sum_combine


@triton.jit
def _program_indices(per_group, N: tl.constexpr, N_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's batch index, group, channel indices (BLOCK_D,), state indices (N_P,) and their masks."""
    block = tl.program_id(0)
    group = tl.program_id(1)
    batch = tl.program_id(2).to(tl.int64)
    in_group = block * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = in_group < per_group
    channel = group * per_group + in_group
    n = tl.arange(0, N_P)
    mask_n = n < N
    return batch, group, block, channel, mask_d, n, mask_n


@triton.jit
def _channel_parameters(A_ptr, D_ptr, bias_ptr, channel, mask_d, n, mask_dn, N: tl.constexpr, BLOCK_D: tl.constexpr,
                        HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr):
    """A (BLOCK_D, N_P), D and delta_bias (BLOCK_D,) of this program's channels, in float32 (zeros when absent)."""
    A = tl.load(A_ptr + channel[:, None] * N + n[None, :], mask=mask_dn, other=0.0).to(tl.float32)
    D = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_D:
        D = tl.load(D_ptr + channel, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + channel, mask=mask_d, other=0.0).to(tl.float32)
    return A, D, bias


@triton.jit
def _forward_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, states_ptr,
    length, channels, groups, per_group, n_chunks,
    N: tl.constexpr, N_P: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE_STATES: tl.constexpr,
):
    batch, group, block, channel, mask_d, n, mask_n = _program_indices(per_group, N, N_P, BLOCK_D)
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A, D, bias = _channel_parameters(A_ptr, D_ptr, bias_ptr, channel, mask_d, n, mask_dn, N, BLOCK_D, HAS_D, HAS_BIAS)
    row = (batch * channels + channel) * length  # start of each channel's sequence in u, delta, y
    bc_row = ((batch * groups + group) * N + n) * length  # start of each state's sequence in B, C
    u_ptr, delta_ptr, y_ptr = u_ptr + row, delta_ptr + row, y_ptr + row
    B_ptr, C_ptr = B_ptr + bc_row, C_ptr + bc_row
    state_at = ((batch * channels + channel[:, None]) * n_chunks) * N + n[None, :]
    h = tl.zeros((BLOCK_D, N_P), dtype=tl.float32)
    for t in range(0, length):
        u = tl.load(u_ptr + t, mask=mask_d, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + t, mask=mask_d, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += bias
        if SOFTPLUS:  # log(1 + exp(dt)) without overflow, plus what rounding 1 + e lost (to first order)
            e = tl.exp(-tl.abs(dt))
            w = 1.0 + e
            dt = tl.maximum(dt, 0.0) + tl.log(w) + (e - (w - 1.0)) / w
        B = tl.load(B_ptr + t, mask=mask_n, other=0.0).to(tl.float32)
        C = tl.load(C_ptr + t, mask=mask_n, other=0.0).to(tl.float32)
        h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * B[None, :]
        y = tl.reduce(h * C[None, :], 1, _add)
        if HAS_D:
            y += D * u
        tl.store(y_ptr + t, y.to(y_ptr.dtype.element_ty), mask=mask_d)
        if SAVE_STATES:
            if (t + 1) % CHUNK == 0:  # the state the next chunk starts from
                tl.store(states_ptr + state_at + (t // CHUNK) * N, h, mask=mask_dn)


@triton.jit
def _backward_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, states_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
    length, channels, groups, per_group, blocks_per_group, n_chunks,
    N: tl.constexpr, N_P: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    batch, group, block, channel, mask_d, n, mask_n = _program_indices(per_group, N, N_P, BLOCK_D)
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A, D, bias = _channel_parameters(A_ptr, D_ptr, bias_ptr, channel, mask_d, n, mask_dn, N, BLOCK_D, HAS_D, HAS_BIAS)
    row = (batch * channels + channel) * length
    bc_row = ((batch * groups + group) * N + n) * length
    u_ptr, delta_ptr, dy_ptr = u_ptr + row, delta_ptr + row, dy_ptr + row
    du_ptr, ddelta_ptr = du_ptr + row, ddelta_ptr + row
    B_ptr, C_ptr = B_ptr + bc_row, C_ptr + bc_row
    program = (batch * groups + group) * blocks_per_group + block
    part_row = (program * N + n) * length  # this program's rows of the per-block dB, dC partial sums
    dB_ptr, dC_ptr = dB_ptr + part_row, dC_ptr + part_row
    state_at = ((batch * channels + channel[:, None]) * n_chunks) * N + n[None, :]
    tile = tl.arange(0, BLOCK_D)[:, None] * N_P + n[None, :]
    # Per program and step: h_{t-1} (BLOCK_D, N_P), delta_t after softplus (BLOCK_D), softplus' (BLOCK_D).
    scratch = scratch_ptr + program * (CHUNK * BLOCK_D * (N_P + 2))
    scratch_h = scratch + tile
    scratch_dt = scratch + BLOCK_D * N_P + tl.arange(0, BLOCK_D)

    lam_next = tl.zeros((BLOCK_D, N_P), dtype=tl.float32)  # exp(delta_{t+1} A) lam_{t+1}
    dA = tl.zeros((BLOCK_D, N_P), dtype=tl.float32)
    dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        t0 = c * CHUNK
        t1 = tl.minimum(t0 + CHUNK, length)
        # Recompute the chunk's states from the one saved before it, keeping h_{t-1} and delta_t per step.
        h = tl.load(states_ptr + state_at + (c - 1) * N, mask=mask_dn & (c > 0), other=0.0)
        for t in range(t0, t1):
            step = (t - t0) * (BLOCK_D * (N_P + 2))
            tl.store(scratch_h + step, h)
            u = tl.load(u_ptr + t, mask=mask_d, other=0.0).to(tl.float32)
            dt = tl.load(delta_ptr + t, mask=mask_d, other=0.0).to(tl.float32)
            if HAS_BIAS:
                dt += bias
            slope = tl.full((BLOCK_D,), 1.0, tl.float32)
            if SOFTPLUS:  # as in the forward; slope = sigmoid, the derivative of softplus
                slope = 1.0 / (1.0 + tl.exp(-dt))
                e = tl.exp(-tl.abs(dt))
                w = 1.0 + e
                dt = tl.maximum(dt, 0.0) + tl.log(w) + (e - (w - 1.0)) / w
            tl.store(scratch_dt + step, dt)
            tl.store(scratch_dt + step + BLOCK_D, slope)
            B = tl.load(B_ptr + t, mask=mask_n, other=0.0).to(tl.float32)
            h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * B[None, :]
        tl.debug_barrier()  # the scratch writes above are read below
        # The adjoint recurrence, backwards through the chunk.
        for j in range(0, t1 - t0):
            t = t1 - 1 - j
            step = (t - t0) * (BLOCK_D * (N_P + 2))
            h_prev = tl.load(scratch_h + step)
            dt = tl.load(scratch_dt + step)
            u = tl.load(u_ptr + t, mask=mask_d, other=0.0).to(tl.float32)
            B = tl.load(B_ptr + t, mask=mask_n, other=0.0).to(tl.float32)
            C = tl.load(C_ptr + t, mask=mask_n, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + t, mask=mask_d, other=0.0).to(tl.float32)
            decay = tl.exp(dt[:, None] * A)
            dt_u = dt * u
            h = decay * h_prev + dt_u[:, None] * B[None, :]
            lam = lam_next + dy[:, None] * C[None, :]
            tl.store(dC_ptr + t, tl.reduce(dy[:, None] * h, 0, _add), mask=mask_n)
            tl.store(dB_ptr + t, tl.reduce(lam * dt_u[:, None], 0, _add), mask=mask_n)
            lam_B = tl.reduce(lam * B[None, :], 1, _add)
            du = dt * lam_B
            if HAS_D:
                du += D * dy
            dz = lam * decay * h_prev  # dLoss / d(delta_t * A)
            dA += dz * dt[:, None]
            ddt = (u * lam_B + tl.reduce(dz * A, 1, _add)) * tl.load(scratch_dt + step + BLOCK_D)
            dbias += ddt
            dD += dy * u
            tl.store(du_ptr + t, du.to(du_ptr.dtype.element_ty), mask=mask_d)
            tl.store(ddelta_ptr + t, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_d)
            lam_next = decay * lam
        tl.debug_barrier()  # the next chunk overwrites the scratch buffer
    tl.store(dA_ptr + (batch * channels + channel[:, None]) * N + n[None, :], dA, mask=mask_dn)
    tl.store(dD_ptr + batch * channels + channel, dD, mask=mask_d)
    tl.store(dbias_ptr + batch * channels + channel, dbias, mask=mask_d)


class _Launch:
    """Sizes of one call and the kernels' launch parameters."""

    def __init__(self, u: torch.Tensor, A: torch.Tensor, B: torch.Tensor):
        self.batch, self.channels, self.length = u.shape
        self.groups, self.d_state = B.shape[1], A.shape[1]
        self.per_group = self.channels // self.groups
        self.n_pad = triton.next_power_of_2(self.d_state)
        self.block_d = min(triton.next_power_of_2(self.per_group), MAX_BLOCK_D,
                           max(1, STATE_ENTRIES_PER_PROGRAM // self.n_pad))
        self.blocks_per_group = triton.cdiv(self.per_group, self.block_d)
        self.n_chunks = triton.cdiv(self.length, CHUNK)
        self.grid = (self.blocks_per_group, self.groups, self.batch)
        self.num_warps = 1 if self.block_d * self.n_pad <= 64 else 2 if self.block_d * self.n_pad <= 256 else 4

    def constants(self, D, delta_bias, delta_softplus) -> dict:
        return dict(N=self.d_state, N_P=self.n_pad, BLOCK_D=self.block_d, CHUNK=CHUNK, HAS_D=D is not None,
                    HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus, num_warps=self.num_warps)


def _placeholder(like: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    """A pointer for an absent optional argument (never read: HAS_D / HAS_BIAS is false)."""
    return like if x is None else x


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        u, delta, A, B, C = (x.contiguous() for x in (u, delta, A, B, C))
        D, delta_bias = (None if x is None else x.contiguous() for x in (D, delta_bias))
        launch = _Launch(u, A, B)
        y = torch.empty_like(u)
        save = any(ctx.needs_input_grad)
        states = u.new_empty((launch.batch, launch.channels, launch.n_chunks, launch.d_state) if save else (1,),
                             dtype=torch.float32)
        if y.numel():
            _forward_kernel[launch.grid](
                u, delta, A, B, C, _placeholder(A, D), _placeholder(A, delta_bias), y, states,
                launch.length, launch.channels, launch.groups, launch.per_group, launch.n_chunks,
                SAVE_STATES=save, **launch.constants(D, delta_bias, delta_softplus),
            )
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, states)
        ctx.delta_softplus = delta_softplus
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        launch = _Launch(u, A, B)
        b, d, n, g = launch.batch, launch.channels, launch.d_state, launch.groups
        programs = b * g * launch.blocks_per_group
        f32 = dict(device=u.device, dtype=torch.float32)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dA = torch.zeros(b, d, n, **f32)
        dD, dbias = torch.zeros(b, d, **f32), torch.zeros(b, d, **f32)
        dB = torch.zeros(b, g, launch.blocks_per_group, n, launch.length, **f32)
        dC = torch.zeros_like(dB)
        if u.numel():
            scratch = torch.empty(programs * CHUNK * launch.block_d * (launch.n_pad + 2), **f32)
            _backward_kernel[launch.grid](
                u, delta, A, B, C, _placeholder(A, D), _placeholder(A, delta_bias), dy.contiguous(), states,
                scratch, du, ddelta, dA, dB, dC, dD, dbias,
                launch.length, launch.channels, launch.groups, launch.per_group, launch.blocks_per_group,
                launch.n_chunks, **launch.constants(D, delta_bias, ctx.delta_softplus),
            )
        grads = (du, ddelta, dA.sum(0).to(A.dtype), dB.sum(2).to(B.dtype), dC.sum(2).to(C.dtype),
                 None if D is None else dD.sum(0).to(D.dtype),
                 None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype))
        return (*(grad if need else None for grad, need in zip(grads, ctx.needs_input_grad)), None)


def selective_scan_triton(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """y (b, d, l) in the dtype of u, by the Triton kernels; shapes already checked by the dispatcher."""
    for name, x in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), (u, delta, A, B, C, D, delta_bias)):
        if x is not None and x.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"selective-scan backend 'triton' takes float32, bfloat16 or float16 tensors (it "
                            f"computes in float32), but {name} is {x.dtype}; use backend='torch' or 'reference' "
                            "for float64")
    return _TritonScan.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus))
