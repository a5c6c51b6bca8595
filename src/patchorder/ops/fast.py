"""The pure-PyTorch selective scan: the CPU default backend and the training hot path.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = <C_t, h_t> + D * u_t

Why it looks the way it does (alternatives were timed on the 2-core development machine; the final choices
are compared with mambapy's parallel scan in experiments/benchmarks/bench_scan.py):

* Only the recurrence steps through time: one in-place ``addcmul_`` per step on a (batch, channel, state)
  slice. All other work (exp(delta * A), delta * B * u, the C contraction, every gradient product and
  reduction) is vectorised over a whole block of steps, outside the loop. The steps are usually smaller
  than torch's parallel grain and run on the calling thread; the block-wide ops use torch's thread pool.
* The inputs keep mamba-ssm's layout, time last. Where the state is small (d_state < 4; VMamba uses 1) the
  block buffers are time-last too, so no tensor is ever transposed and each step reads a strided slice;
  transposing to make the steps contiguous cost more than it saved. Where the state is large, the strided
  steps dominate, so the state buffers are time-major (each step contiguous) and only the small
  (batch, channel, time) tensors are read and written across layouts.
* The sequence is processed in blocks of time steps whose buffers stay in cache and are reused from block
  to block. Fresh multi-megabyte tensors are expensive on CPU (every new page is faulted in), so the only
  large allocations are the outputs and the gradients handed back to autograd. Time-last buffer rows are
  padded to an odd number of cache lines, so strided per-step slices do not all land in the same cache sets.
* A two-level scan (sub-chunks scanned side by side, then carries) cut the number of steps but added more
  elementwise passes than it saved dispatches; the plain loop was faster at every size measured.
* F.softplus is replaced by an equally accurate formula: torch's CPU log1p is a slow scalar loop.
* Backward is a custom autograd function. It keeps only the state at each block boundary, recomputes a
  block's states from it (memory O(state) per block instead of O(state x length)) and runs the adjoint
  recurrence backwards in time with the same loop.
* Decays exp(delta * A) lie in [0, 1] whenever delta >= 0 and A <= 0: nothing takes a positive exponent or a
  ratio of exponentials, so forward and backward stay finite at any length.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from patchorder.ops.shapes import check_scan_shapes

# Target size in bytes of one (batch, channels, d_state, block) buffer; a block's working set is a few
# such buffers, so it stays in L2/L3. Measured best on the development machine: 64 steps at b=8, d=384, n=1.
BLOCK_BYTES = 768 * 2**10
# Bounds on the time steps per block: enough steps to amortise the per-block vectorised ops, few enough
# that the buffers stay cache-sized.
MIN_BLOCK_STEPS, MAX_BLOCK_STEPS = 16, 256
CACHE_LINE_BYTES = 64
# From this d_state on, state buffers are time-major (see the module docstring).
TIME_MAJOR_MIN_STATE = 4


# ----------------------------------------------------------------------------------------------------
# The linear recurrence along the last (time) axis, in place.


def scan_forward_(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None) -> None:
    """x[..., t] <- a[..., t] * x[..., t-1] + x[..., t] for t = 0..K-1, with x[..., -1] = h0 (zero if None)."""
    xs, as_ = x.unbind(-1), a.unbind(-1)
    if h0 is not None:
        xs[0].addcmul_(as_[0], h0)
    for t in range(1, len(xs)):
        xs[t].addcmul_(as_[t], xs[t - 1])


def scan_reverse_(a_next: torch.Tensor, x: torch.Tensor, carry: torch.Tensor | None) -> None:
    """x[..., t] <- x[..., t] + a_next[..., t] * x[..., t+1] for t = K-2..0, after x[..., K-1] += carry.

    The adjoint of ``scan_forward_``: a_next (..., K-1) is the decay of the step after t; carry is what flows
    in from beyond the block, already multiplied by its decay (zero if None).
    """
    xs, as_ = x.unbind(-1), a_next.unbind(-1)
    if carry is not None:
        xs[-1].add_(carry)
    for t in range(len(xs) - 2, -1, -1):
        xs[t].addcmul_(as_[t], xs[t + 1])


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)) to float rounding, about 5x faster than F.softplus on CPU (where log1p is a slow loop).

    Computed as max(x, 0) + log1p(exp(-|x|)), with log1p(e) = log(1 + e) plus what rounding 1 + e lost, to
    first order. Above x = 20, where F.softplus returns x itself, this keeps the true value (x + < 2.1e-9).
    """
    e = x.abs().neg_().exp_()  # exp(-|x|) in [0, 1]: never overflows
    w = e + 1
    lost_to_rounding = e.sub_(w - 1).div_(w)
    return w.log_().add_(lost_to_rounding).add_(x.clamp(min=0))


# ----------------------------------------------------------------------------------------------------
# Blocks of time steps.


def _time_buffer(like: torch.Tensor, *leading: int, steps: int, time_major: bool) -> torch.Tensor:
    """Uninitialised (*leading, steps) buffer, stored time-major (each step contiguous) or time-last with rows
    padded to an odd number of cache lines (so strided steps do not all land in the same cache sets)."""
    if time_major:
        return like.new_empty(steps, *leading).movedim(0, -1)
    lines = -(-steps * like.element_size() // CACHE_LINE_BYTES)
    lines += 1 - lines % 2
    row = max(steps, lines * CACHE_LINE_BYTES // like.element_size())
    return like.new_empty(*leading, row)[..., :steps]


class _Problem:
    """The arguments of one scan call, their sizes, and per-block views of them."""

    def __init__(self, u, delta, A, B, C, D, delta_bias, delta_softplus):
        self.u, self.delta, self.A, self.B, self.C, self.D = u, delta, A, B, C, D
        self.delta_bias, self.delta_softplus = delta_bias, delta_softplus
        self.batch, self.channels, self.length = u.shape
        self.groups, self.d_state = B.shape[1], A.shape[1]
        self.per_group = self.channels // self.groups
        state_bytes = max(1, self.batch * self.channels * self.d_state * u.element_size())
        steps = min(MAX_BLOCK_STEPS, max(MIN_BLOCK_STEPS, BLOCK_BYTES // state_bytes))
        self.block = max(1, min(self.length, steps))
        self.time_major = self.d_state >= TIME_MAJOR_MIN_STATE

    def blocks(self) -> list[tuple[int, int]]:
        return [(t0, min(t0 + self.block, self.length)) for t0 in range(0, self.length, self.block)]

    def state_buffer(self, extra_steps: int = 0) -> torch.Tensor:
        """(b, d, n, block + extra_steps), in the layout the recurrence prefers at this d_state."""
        return _time_buffer(self.u, self.batch, self.channels, self.d_state, steps=self.block + extra_steps,
                            time_major=self.time_major)

    def channel_buffer(self) -> torch.Tensor:
        """(b, d, block), always time-last: filled from and written back to the inputs' layout."""
        return _time_buffer(self.u, self.batch, self.channels, steps=self.block, time_major=False)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """(b, d, ...) -> (b, groups, channels per group, ...), so that B and C broadcast over a group."""
        return x.unflatten(1, (self.groups, self.per_group))

    def group_block(self, X: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """Block of B or C, (b, g, n, k) -> (b, g, 1, n, k): broadcasts against grouped states."""
        return X[..., t0:t1].unsqueeze(2)

    def delta_block(self, t0: int, t1: int, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(delta after bias and softplus, delta before softplus), each (b, d, k)."""
        raw = self.delta[..., t0:t1]
        if self.delta_bias is not None:
            raw = torch.add(raw, self.delta_bias[:, None], out=out)
        return (softplus(raw) if self.delta_softplus else raw), raw

    def decay_block(self, dt: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """exp(delta * A), (b, d, n, k); every exponent is <= 0 when delta >= 0 and A <= 0."""
        torch.mul(dt.unsqueeze(2), self.A[:, :, None], out=out)
        return out.exp_()

    def input_block(self, dt_u: torch.Tensor, t0: int, t1: int, out: torch.Tensor) -> torch.Tensor:
        """delta * u * B, (b, d, n, k)."""
        torch.mul(self.grouped(dt_u.unsqueeze(2)), self.group_block(self.B, t0, t1), out=self.grouped(out))
        return out

    def sum_states(self, states: torch.Tensor, X: torch.Tensor, t0: int, t1: int, out=None) -> torch.Tensor:
        """sum_n states * X, (b, d, k), with X = B or C (b, g, n, l)."""
        product_shape = (self.batch, self.groups, self.per_group, states.shape[-1])
        if out is not None:
            out = out.view(product_shape)
        if self.d_state == 1:
            X = X[:, :, 0, t0:t1].unsqueeze(2)
            result = torch.mul(self.grouped(states.squeeze(2)), X, out=out)
        else:
            result = torch.sum(self.grouped(states) * self.group_block(X, t0, t1), dim=3, out=out)
        return result.flatten(1, 2)

    def sum_group_channels(self, states: torch.Tensor, per_channel: torch.Tensor) -> torch.Tensor:
        """sum over each group's channels of states * per_channel, (b, g, n, k): the gradient of B or C."""
        return (self.grouped(states) * self.grouped(per_channel.unsqueeze(2))).sum(2)


def _forward(p: _Problem, keep_boundaries: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y (b, d, l) and, if asked, the state at the end of every block but the last (for backward)."""
    blocks = p.blocks()
    y = p.u.new_empty(p.batch, p.channels, p.length)
    boundaries = p.u.new_empty(max(0, len(blocks) - 1), p.batch, p.channels, p.d_state) if keep_boundaries else None
    dt_buf, dtu_buf = p.channel_buffer(), p.channel_buffer()
    decay_buf, state_buf = p.state_buffer(), p.state_buffer()
    h = None
    for i, (t0, t1) in enumerate(blocks):
        k = t1 - t0
        u_blk = p.u[..., t0:t1]
        dt, _ = p.delta_block(t0, t1, dt_buf[..., :k])
        decay = p.decay_block(dt, decay_buf[..., :k])
        states = p.input_block(torch.mul(dt, u_blk, out=dtu_buf[..., :k]), t0, t1, state_buf[..., :k])
        scan_forward_(decay, states, h)
        y_blk = p.sum_states(states, p.C, t0, t1, out=y[..., t0:t1])
        if p.D is not None:
            y_blk.addcmul_(u_blk, p.D[:, None])
        if i < len(blocks) - 1:
            # The next block overwrites the buffer: keep this block's last state.
            h = boundaries[i] if boundaries is not None else torch.empty_like(states[..., -1])
            h.copy_(states[..., -1])
    return y, boundaries


def _backward(p: _Problem, boundaries: torch.Tensor, dy: torch.Tensor, needs: tuple[bool, ...]):
    """Gradients of (u, delta, A, B, C, D, delta_bias), block by block in reverse time.

    With lam_t = dLoss/dh_t (the adjoint state) and z_t = delta_t * A:
        lam_t = C_t dy_t + exp(z_{t+1}) lam_{t+1}
        du = delta sum_n lam B + D dy             d delta = u sum_n lam B + sum_n dz A
        dz = lam h_{t-1} exp(z_t)                dA = sum_{b,t} dz delta
        dB = sum_group lam delta u               dC = sum_group dy h_t            dD = sum_{b,t} dy u
    """
    need_u, need_delta, need_A, need_B, need_C, need_D, need_bias = needs
    need_ddt = need_delta or need_bias
    du = torch.empty_like(p.u) if need_u else None
    ddelta = torch.empty_like(p.delta) if need_ddt else None
    dB = torch.empty_like(p.B) if need_B else None
    dC = torch.empty_like(p.C) if need_C else None
    dA = torch.zeros_like(p.A) if need_A else None
    dD = torch.zeros_like(p.D) if need_D else None
    dt_buf, dtu_buf = p.channel_buffer(), p.channel_buffer()
    decay_buf, lam_buf = p.state_buffer(), p.state_buffer()
    state_buf = p.state_buffer(extra_steps=1)  # column 0: the state before the block
    carry = None
    blocks = p.blocks()
    for i in range(len(blocks) - 1, -1, -1):
        t0, t1 = blocks[i]
        k = t1 - t0
        u_blk, dy_blk = p.u[..., t0:t1], dy[..., t0:t1]
        # Recompute the block's states from the state at its start.
        dt, pre_softplus = p.delta_block(t0, t1, dt_buf[..., :k])
        decay = p.decay_block(dt, decay_buf[..., :k])
        dt_u = torch.mul(dt, u_blk, out=dtu_buf[..., :k])
        h_all = state_buf[..., : k + 1]
        h_prev, h = h_all[..., :-1], h_all[..., 1:]
        if i == 0:
            h_all[..., 0].zero_()
        else:
            h_all[..., 0] = boundaries[i - 1]
        p.input_block(dt_u, t0, t1, h)
        scan_forward_(decay, h, h_all[..., 0] if i > 0 else None)
        # Adjoint states, backwards in time.
        lam = lam_buf[..., :k]
        torch.mul(p.grouped(dy_blk.unsqueeze(2)), p.group_block(p.C, t0, t1), out=p.grouped(lam))
        scan_reverse_(decay[..., 1:], lam, carry)
        carry = decay[..., 0] * lam[..., 0]
        if need_C:
            dC[..., t0:t1] = p.sum_group_channels(h, dy_blk)
        if need_B:
            dB[..., t0:t1] = p.sum_group_channels(lam, dt_u)
        if need_D:
            dD += (dy_blk * u_blk).sum((0, 2))
        lam_B = p.sum_states(lam, p.B, t0, t1)  # sum_n lam B, (b, d, k)
        if need_u:
            du_blk = torch.mul(lam_B, dt, out=du[..., t0:t1])
            if p.D is not None:
                du_blk.addcmul_(dy_blk, p.D[:, None])
        if need_ddt or need_A:
            dz = decay.mul_(lam).mul_(h_prev)  # the decays are not needed any more: reuse their buffer
            if need_ddt:
                ddt = lam_B.mul_(u_blk)
                if p.d_state == 1:
                    ddt.addcmul_(dz.squeeze(2), p.A)
                else:
                    ddt += (dz * p.A[:, :, None]).sum(2)
                if p.delta_softplus:
                    ddt.mul_(torch.sigmoid(pre_softplus))
                ddelta[..., t0:t1] = ddt
            if need_A:
                dA += dz.mul_(dt.unsqueeze(2)).sum((0, 3))
    dbias = ddelta.sum((0, 2)) if need_bias else None
    return du, ddelta if need_delta else None, dA, dB, dC, dD, dbias


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        problem = _Problem(u, delta, A, B, C, D, delta_bias, delta_softplus)
        y, boundaries = _forward(problem, keep_boundaries=any(ctx.needs_input_grad))
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, boundaries)
        ctx.delta_softplus = delta_softplus
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        u, delta, A, B, C, D, delta_bias, boundaries = ctx.saved_tensors
        problem = _Problem(u, delta, A, B, C, D, delta_bias, ctx.delta_softplus)
        grads = _backward(problem, boundaries, dy.to(u.dtype), ctx.needs_input_grad[:7])
        return (*grads, None)


def scan_torch(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The torch backend on already-checked arguments: computes in float32 (float64 when u is float64) and
    returns the dtype of u."""
    dtype = torch.promote_types(u.dtype, torch.float32)
    args = [None if x is None else x.to(dtype) for x in (u, delta, A, B, C, D, delta_bias)]
    return _SelectiveScan.apply(*args, bool(delta_softplus)).to(u.dtype)


def selective_scan_fast(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """y (b, d, l) of the selective scan in plain PyTorch, differentiable in every tensor argument.

    Arguments as ``patchorder.ops.selective_scan``. Computes in float32 (float64 when u is float64) and
    returns the dtype of u.
    """
    check_scan_shapes(u, delta, A, B, C, D, delta_bias)
    return scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)
