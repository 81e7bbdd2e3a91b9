"""The Optimal-Brain-Surgeon column solver shared by GPTQ (`quantize{method=gptq}`) and
SparseGPT (`sparsify{method=sparsegpt}`).

Follows GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers", Algorithm 1) and SparseGPT (Frantar &
Alistarh 2023), which share one loop: for a linear layer with weight `W` [N, K] and input
second moment `H = E[x x^T]` [K, K], walk the columns in order; replace column j by a
constrained value `q_j` (a rounded or pruned column) and spread the error over the columns
not yet processed, weighted by the inverse Hessian, so that `||X W^T - X Q^T||^2` stays
small. The inverse Hessian is used through the upper Cholesky factor `U` of `H^-1`
(`H^-1 = U^T U`), which gives every step's row of the updated inverse at once. Updates are
applied lazily in blocks of `block_size` columns (the error of a block reaches the columns
after it in one GEMM).

Departures: `H` is the mean (not 2/n times the sum) of `x x^T`, which only rescales the
damping base; damping is `percdamp * mean(diag H)`, raised tenfold (up to four times) if
the Cholesky factorisation still fails; everything is float64 (the layers this project
meets are small enough); `H` comes from one run of the uncompressed model (see
`compiler.calibration`), not from inputs propagated through already-compressed layers.

API
---
    result = obs_solve(W, H, round_column, block_size=128, percdamp=0.01,
                       act_order=False, align=1)

`round_column(j, state) -> Tensor[N]` is called once per column in processing order. It
returns the constrained column (dequantized values for quantization, the column with
pruned entries set to 0 for pruning), as a float tensor of shape [N]. `state` is an
`ObsState` giving:

* `state.col(j)`      the original column index of processing position j (differs from j
                      only with `act_order`);
* `state.w`           the current (error-compensated) values of column j, [N];
* `state.block(j, width)`  the current values of columns j .. j+width-1 in processing order,
                      [N, width]; they must lie in the current lazy block, which `align`
                      guarantees for aligned runs: the lazy block size is a multiple of
                      `align`, so GPTQ groups (align=group) or SparseGPT's 4-column 2:4
                      windows (align=4), starting at a multiple of `align`, never straddle
                      two blocks;
* `state.hinv_diag(j, width)`  the diagonal of `U` for those columns ([width]); SparseGPT's
                      saliency of w_ij is `w_ij^2 / U_jj^2`.

The solver returns `ObsResult(Q)`: `Q` [N, K] float64 holds the returned columns in the
original column order. The callback may record anything else it needs
(integer codes, masks) in its own closure, indexed by `state.col(j)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class ObsResult:
    Q: torch.Tensor      # [N, K] float64, original column order


class ObsState:
    """What `round_column` sees; see the module docstring."""

    def __init__(self, perm: torch.Tensor | None, U: torch.Tensor):
        self._perm = perm
        self._U = U
        self._W1: torch.Tensor | None = None
        self._i1 = 0
        self.j = 0
        self.w: torch.Tensor | None = None

    def col(self, j: int) -> int:
        return int(self._perm[j]) if self._perm is not None else j

    def block(self, j: int, width: int) -> torch.Tensor:
        lo = j - self._i1
        if lo < 0 or lo + width > self._W1.shape[1]:
            raise ValueError(f"columns {j}..{j + width - 1} are not in the current lazy block "
                             f"{self._i1}..{self._i1 + self._W1.shape[1] - 1}; use align=")
        return self._W1[:, lo:lo + width]

    def hinv_diag(self, j: int, width: int = 1) -> torch.Tensor:
        return torch.diagonal(self._U)[j:j + width]


RoundColumn = Callable[[int, ObsState], torch.Tensor]


# When H + damp I does not factorise (a rank-deficient calibration set), the damping grows
# by this factor, at most this many times: 10^4 x percdamp is still far below diag(H).
DAMP_GROWTH, DAMP_TRIES = 10.0, 5


def inverse_hessian_factor(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp I)^-1, damping raised until it factorises."""
    diag_mean = float(torch.diagonal(H).mean()) if H.numel() else 1.0
    damp = percdamp * (diag_mean if diag_mean > 0 else 1.0)
    eye = torch.eye(H.shape[0], dtype=H.dtype)
    for _ in range(DAMP_TRIES):
        L, info = torch.linalg.cholesky_ex(H + damp * eye)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info) == 0:
                return U
        damp *= DAMP_GROWTH
    raise ValueError("the calibration Hessian is not positive definite even after damping; "
                     "use more calibration data")


def obs_solve(W: torch.Tensor, H: torch.Tensor, round_column: RoundColumn, *,
              block_size: int = 128, percdamp: float = 0.01, act_order: bool = False,
              align: int = 1) -> ObsResult:
    """Column-by-column OBS compensation; see the module docstring for the contract."""
    if W.dim() != 2 or H.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"W must be [N, K] and H [K, K]; got {tuple(W.shape)} and {tuple(H.shape)}")
    W = W.detach().to(torch.float64).clone()
    H = H.detach().to(torch.float64).clone()
    k = W.shape[1]
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = None
    if act_order:
        perm = torch.argsort(torch.diagonal(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    U = inverse_hessian_factor(H, percdamp)
    align = max(int(align), 1)
    bs = max(block_size // align, 1) * align
    state = ObsState(perm, U)
    Q = torch.zeros_like(W)
    for i1 in range(0, k, bs):
        i2 = min(i1 + bs, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        state._W1, state._i1 = W1, i1
        for i in range(i2 - i1):
            w = W1[:, i]
            d = U1[i, i]
            state.j, state.w = i1 + i, w
            q = round_column(i1 + i, state).to(torch.float64)
            Q[:, i1 + i] = q
            err = (w - q) / d
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            Err1[:, i] = err
        if i2 < k:
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return ObsResult(Q)
