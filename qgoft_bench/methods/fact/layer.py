"""FacT (Jie & Deng, AAAI 2023): the updates of all adapted matrices of all blocks, cut into d x d slices and stacked
into one d x d x N tensor, are factorised jointly; U and V are shared by every slice, so a slice costs only its core.

Conventions (rows are samples). A target linear with weight W (out x in), out = b d and in = a d, has b x a slices
W_ij (output block i, input block j). FacT adds to slice (i, j)

    dW_ij = s * V S_ij^T U          U: r x d (input side),  V: d x r (output side),  S_ij: r x r

so the layer computes y_i = x W_i^T + s * (sum_j x_j U^T S_ij) V^T: x_j is the j-th d-block of the input. The cores:
- FacT-TT (tensor train): S_ij free, one r x r matrix per slice, owned by the layer;
- FacT-TK (Tucker): S_ij = sum_k C[:, :, k] P[k, n_ij], with C (r x r x r) and P (r x N) shared by all slices.
V starts at zero, so an adapted model computes what the frozen one did until training moves it. The delta is dense
and linear, so merging folds it into W exactly: W' = W + dW.
"""

import math

import torch
from torch import nn


class FacTFactors(nn.Module):
    """The factors every slice shares: U (r x d), V (d x r), and for Tucker C (r x r x r) and P (r x N)."""

    def __init__(self, form: str, width: int, rank: int, slices: int, factory: dict) -> None:
        super().__init__()
        self.form, self.width, self.rank, self.slices = form, width, rank, slices
        self.U = nn.Parameter(torch.empty(rank, width, **factory))
        self.V = nn.Parameter(torch.zeros(width, rank, **factory))
        if form == "tk":
            self.C = nn.Parameter(torch.empty(rank, rank, rank, **factory))
            self.P = nn.Parameter(torch.empty(rank, slices, **factory))
        if not self.U.is_meta:
            nn.init.uniform_(self.U, -1 / math.sqrt(width), 1 / math.sqrt(width))  # nn.Linear(d, r)'s default
            if form == "tk":
                nn.init.xavier_uniform_(self.C)  # the authors' initialisation of the Tucker core and P
                nn.init.xavier_uniform_(self.P)


class FacTLayer(nn.Module):
    """A frozen linear (``base_layer``) plus FacT's factorised update of its slices ``first .. first + b a - 1``."""

    def __init__(self, base_layer: nn.Linear, factors: FacTFactors, first: int, scale: float, dropout: float) -> None:
        super().__init__()
        d = factors.width
        if base_layer.in_features % d or base_layer.out_features % d:
            raise ValueError(f"a {base_layer.out_features} x {base_layer.in_features} weight is not made of "
                             f"{d} x {d} slices")
        self.base_layer = base_layer
        self.blocks_out, self.blocks_in = base_layer.out_features // d, base_layer.in_features // d
        self.first, self.scale = first, scale
        self.shared = (factors,)  # a tuple, so the shared factors are not registered (and counted) once per layer
        self.dropout = nn.Dropout(dropout)
        if factors.form == "tt":
            r = factors.rank
            factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
            self.fact_core = nn.Parameter(torch.empty(self.blocks_out, self.blocks_in, r, r, **factory))
            if not self.fact_core.is_meta:  # nn.Linear(a r, r)'s default, as the authors' per-layer cores
                bound = 1 / math.sqrt(self.blocks_in * r)
                nn.init.uniform_(self.fact_core, -bound, bound)

    @property
    def slices(self) -> int:
        """The number of r x r cores this layer reads from the shared tensor: b * a (its d x d blocks)."""
        return self.blocks_out * self.blocks_in

    def cores(self) -> torch.Tensor:
        """S as a (b, a, r, r) tensor: S[i, j] is slice (i, j)'s r x r core."""
        if hasattr(self, "fact_core"):
            return self.fact_core
        f = self.shared[0]
        p = f.P[:, self.first:self.first + self.slices]  # (r, b a)
        return torch.einsum("pqk,kn->npq", f.C, p).reshape(self.blocks_out, self.blocks_in, f.rank, f.rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.shared[0]
        lead = x.shape[:-1]
        z = x.reshape(*lead, self.blocks_in, f.width) @ f.U.t()  # (..., a, r)
        t = self.dropout(torch.einsum("...jp,ijpq->...iq", z, self.cores()))  # (..., b, r)
        delta = (t @ f.V.t()).reshape(*lead, self.base_layer.out_features)
        return self.base_layer(x) + self.scale * delta

    def delta_weight(self) -> torch.Tensor:
        """dW (out x in) in float32: block (i, j) is s V S_ij^T U."""
        f = self.shared[0]
        delta = torch.einsum("dq,ijpq,pe->idje", f.V.float(), self.cores().float(), f.U.float())
        return self.scale * delta.reshape(self.base_layer.out_features, self.base_layer.in_features)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """The base linear with W' = W + dW (the adapter folded in)."""
        weight = self.base_layer.weight
        weight.copy_((weight.float() + self.delta_weight()).to(weight.dtype))
        return self.base_layer
