"""2:4 semi-structured sparsity: the compressed storage format and `spk.linear_sparse24`.

A 2:4-sparse weight `W [N, K]` keeps at most 2 of every 4 consecutive input features
(K divisible by 4). It is stored as two tensors, the layout NVIDIA's sparse tensor cores
and CUTLASS use (values + 2-bit position metadata), so a GPU kernel can "load compressed,
compute dense":

- `values [N, K/2]`, the weight's dtype: the two kept entries of each group of 4, in
  increasing position order (a group with fewer than two non-zeros stores zeros);
- `meta [N, ceil(K/8)]`, `uint8`: each group's two 2-bit positions `(i0, i1)`, `i0 < i1`,
  as the nibble `i0 | i1 << 2`; group `2j` is the low nibble of byte `j`, group `2j+1` the
  high one (a trailing odd group leaves the high nibble 0).

`compress_24` and `decompress_24` are exact inverses on 2:4-sparse matrices (decompression
is a scatter, no arithmetic). The op that stores this format, `spk.linear_sparse24`, is
declared in `compiler.dialect.spk`.
"""
from __future__ import annotations

import torch

GROUP = 4   # M of N:M
KEEP = 2    # N of N:M


def meta_cols(k: int) -> int:
    """Bytes of metadata per row for `k` in-features (two groups of 4 per byte)."""
    return (k // GROUP + 1) // 2


def is_24_sparse(w: torch.Tensor) -> bool:
    """At most 2 non-zeros in every group of 4 consecutive entries of each row."""
    if w.shape[-1] % GROUP:
        return False
    nz = (w.reshape(*w.shape[:-1], -1, GROUP) != 0).sum(-1)
    return bool((nz <= KEEP).all())


def mask_topk_24(score: torch.Tensor) -> torch.Tensor:
    """The 2:4 keep-mask that keeps, in each group of 4, the two entries of largest `score`
    (ties: the lower position)."""
    n, k = score.shape
    if k % GROUP:
        raise ValueError(f"in-features {k} not divisible by {GROUP}")
    g = score.reshape(n, k // GROUP, GROUP)
    # stable descending sort, so equal scores keep the lower position deterministically
    idx = torch.sort(g, dim=-1, descending=True, stable=True).indices[..., :KEEP]
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(n, k)


def compress_24(w: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(values [N, K/2], meta [N, ceil(K/8)] uint8)` of a 2-D weight under a 2:4 `mask`
    (exactly two True per group of 4). Without a mask, `w` must already be 2:4-sparse and
    the kept positions are its non-zeros (padded with the lowest zero positions)."""
    if w.dim() != 2 or w.shape[1] % GROUP:
        raise ValueError(f"compress_24 needs a 2-D weight with in-features divisible by {GROUP}, "
                         f"got {tuple(w.shape)}")
    n, k = w.shape
    if mask is None:
        if not is_24_sparse(w):
            raise ValueError("the weight is not 2:4-sparse; pass the mask to prune it")
        mask = mask_topk_24((w != 0).to(torch.int8))
    mask = mask.reshape(n, k // GROUP, GROUP)
    if not bool((mask.sum(-1) == KEEP).all()):
        raise ValueError("a 2:4 mask keeps exactly 2 entries in every group of 4")
    # positions of the two kept entries, increasing (argsort of a bool mask is not stable
    # across versions, so compute them from arange)
    pos = torch.arange(GROUP).expand_as(mask)
    big = torch.where(mask, pos, torch.full_like(pos, GROUP))
    idx = torch.sort(big, dim=-1).values[..., :KEEP]                     # [N, K/4, 2]
    values = torch.gather(w.reshape(n, k // GROUP, GROUP), -1, idx).reshape(n, k // 2)
    nibble = (idx[..., 0] | (idx[..., 1] << 2)).to(torch.uint8)         # [N, K/4]
    if nibble.shape[1] % 2:
        nibble = torch.cat([nibble, torch.zeros(n, 1, dtype=torch.uint8)], dim=1)
    meta = nibble[:, 0::2] | (nibble[:, 1::2] << 4)
    return values.contiguous(), meta.contiguous()


def decompress_24(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """The dense `[N, K]` weight (K = 2 * values.shape[1]); exact inverse of `compress_24`."""
    n, half = values.shape
    k = 2 * half
    groups = k // GROUP
    m = meta.to(torch.int64)
    nibble = torch.stack([m & 0xF, m >> 4], dim=-1).reshape(n, -1)[:, :groups]
    idx = torch.stack([nibble & 0x3, (nibble >> 2) & 0x3], dim=-1)     # [N, K/4, 2]
    dense = torch.zeros(n, groups, GROUP, dtype=values.dtype, device=values.device)
    dense.scatter_(-1, idx.to(values.device), values.reshape(n, groups, KEEP))
    return dense.reshape(n, k)
