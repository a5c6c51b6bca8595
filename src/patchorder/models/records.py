"""What one SS2D block computed in one forward pass: everything the attention analysis needs."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SSMRecord:
    """One SS2D block's scan quantities, per route, in sequence order (route-major channel layout).

    With K routes, d channels per route and L = height * width:
      u      (b, K*d, L)  scan input, in each route's sequence order
      delta  (b, K*d, L)  after dt bias and softplus
      A      (K*d, n)     = -exp(A_logs)
      B, C   (b, K, n, L) one group per route
      D      (K*d,)       skip term
      y      (b, K*d, L)  scan output (D skip included), before the cross-merge
      routes (K, L)       route k visits raster index routes[k, s] at position s
    """

    stage: int
    block: int
    grid: tuple[int, int]
    ordering: str
    scheme: str
    routes: torch.Tensor
    u: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor
    y: torch.Tensor

    @property
    def num_routes(self) -> int:
        return self.routes.shape[0]

    @property
    def channels_per_route(self) -> int:
        return self.delta.shape[1] // self.num_routes

    @property
    def name(self) -> str:
        return f"stage{self.stage}/block{self.block}"
