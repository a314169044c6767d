"""Layers that wrap a frozen linear map with a Givens rotation of its input (input-centric, never a dense R).

For a frozen weight W (out x in) and bias b, an adapted layer computes, for column vectors, y = W R^T x + b; for
rows X (the activations), Y = (X R) W^T + b, with R the tree of 2x2 blocks of width ``in`` (see
``qgoft_bench.rotation``). GOFT* additionally scales the rotated input per feature: Y = ((X R) * s) W^T + b.
Merging folds the adapter into the weight: W' = W R^T (GOFT*: W' = W diag(s) R^T), computed in float32.
Both ``nn.Linear`` (weight out x in) and Hugging Face ``Conv1D`` (weight in x out, GPT-2 style) are wrapped.
"""

import math

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from qgoft_bench.rotation import angles_to_blocks, givens_matrix, givens_rotate, inverse_transpose_blocks

LINEAR_KINDS = (nn.Linear, Conv1D)


def linear_weight(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as an (out, in) matrix (a view for Conv1D)."""
    return layer.weight.t() if isinstance(layer, Conv1D) else layer.weight


def _in_features(layer: nn.Module) -> int:
    return layer.weight.shape[0] if isinstance(layer, Conv1D) else layer.in_features


class GivensLayer(nn.Module):
    """Base wrapper: y = base(x @ R) with R from ``blocks()``; subclasses define the parameters."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        if not isinstance(base_layer, LINEAR_KINDS):
            raise TypeError(f"cannot wrap {type(base_layer).__name__}; expected nn.Linear or Conv1D")
        self.base_layer = base_layer
        self.in_features = _in_features(base_layer)
        self.merged = False

    def blocks(self) -> torch.Tensor:
        """The (in - 1, 2, 2) blocks of R, level-major."""
        raise NotImplementedError

    def _inverse_transpose_blocks(self) -> torch.Tensor:
        """Blocks of R^-T (same tree and level order as R), used by ``unmerge``."""
        return inverse_transpose_blocks(self.blocks())

    def _adapt_input(self, x: torch.Tensor) -> torch.Tensor:
        return givens_rotate(x, self.blocks())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) if self.merged else self.base_layer(self._adapt_input(x))

    def merged_weight(self) -> torch.Tensor:
        """W' = W R^T as an (out, in) float32 matrix (dense R here is fine: merging happens once)."""
        weight = linear_weight(self.base_layer).float()
        rotation = givens_matrix(self.blocks().float(), self.in_features)
        return self._scale_columns(weight) @ rotation.t()

    def _scale_columns(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def _unscale_columns(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base weight in place; forward then skips the rotation."""
        if not self.merged:
            self._set_weight(self.merged_weight())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo ``merge``: W = W' R^-T, applied as a tree of blocks M^-T to the rows of W' (no dense inverse).

        Raises ``ValueError``, keeping the merged weight, when the adapter has no inverse: a qGOFT block with
        determinant 0 or a GOFT* scale of 0 (the restored weight would not be finite)."""
        if self.merged:
            weight = linear_weight(self.base_layer).float()
            restored = self._unscale_columns(givens_rotate(weight, self._inverse_transpose_blocks().float()))
            if not torch.isfinite(restored).all():
                raise ValueError("cannot unmerge: the adapter is singular (a block with determinant 0, or a scale of "
                                 "0), so the base weight cannot be recovered; the merged weight is kept")
            self._set_weight(restored)
            self.merged = False

    def _set_weight(self, weight_out_in: torch.Tensor) -> None:
        target = self.base_layer.weight
        value = weight_out_in.t() if isinstance(self.base_layer, Conv1D) else weight_out_in
        target.copy_(value.to(target.dtype))

    def to_linear(self) -> nn.Linear:
        """A plain nn.Linear with the merged weight (float32 merge, cast to the base dtype) and the same bias."""
        base = self.base_layer
        weight = linear_weight(base)
        merged = linear_weight(base).float() if self.merged else self.merged_weight()
        out = nn.Linear(
            self.in_features,
            weight.shape[0],
            bias=base.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            out.weight.copy_(merged.to(weight.dtype))
            if base.bias is not None:
                out.bias.copy_(base.bias)
        return out


class GOFTLayer(GivensLayer):
    """GOFT: one angle per pair, identity at init (p = 0).

    ``parametrization``: ``tanh`` gives theta = pi * tanh(p) (the official code; angles stay in (-pi, pi)),
    ``angle`` gives theta = p.
    """

    def __init__(self, base_layer: nn.Module, parametrization: str = "tanh") -> None:
        super().__init__(base_layer)
        self.parametrization = parametrization
        weight = base_layer.weight
        self.goft_p = nn.Parameter(
            torch.zeros(self.in_features - 1, device=weight.device, dtype=torch.float32)
        )

    def angles(self) -> torch.Tensor:
        """The (in - 1,) rotation angles in radians, level-major: pi * tanh(p) or p (``parametrization``)."""
        return math.pi * torch.tanh(self.goft_p) if self.parametrization == "tanh" else self.goft_p

    def blocks(self) -> torch.Tensor:
        return angles_to_blocks(self.angles())

    def _inverse_transpose_blocks(self) -> torch.Tensor:
        # A rotation is orthogonal: M^-T = M, so R^-T = R exactly.
        return self.blocks()


class GOFTScaledLayer(GOFTLayer):
    """GOFT* (paper): GOFT plus a learned scale per input feature applied after the rotation, s = 1 at init."""

    def __init__(self, base_layer: nn.Module, parametrization: str = "tanh") -> None:
        super().__init__(base_layer, parametrization)
        self.goft_scale = nn.Parameter(torch.ones(self.in_features, device=self.goft_p.device))

    def _adapt_input(self, x: torch.Tensor) -> torch.Tensor:
        return givens_rotate(x, self.blocks()) * self.goft_scale.to(x.dtype)

    def _scale_columns(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.goft_scale.float()

    def _unscale_columns(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / self.goft_scale.float()


class QGOFTLayer(GivensLayer):
    """qGOFT: four free numbers per pair (a 2x2 block), identity at init; kept near-orthogonal by ``penalty``."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        eye = torch.eye(2, device=base_layer.weight.device, dtype=torch.float32)
        self.qgoft_blocks = nn.Parameter(eye.repeat(self.in_features - 1, 1, 1))

    def blocks(self) -> torch.Tensor:
        return self.qgoft_blocks

    def penalty(self) -> torch.Tensor:
        """sum over blocks of (M00 M01 + M10 M11)^2, the paper's soft-orthogonality term (lambda applied outside)."""
        m = self.qgoft_blocks
        return (m[:, 0, 0] * m[:, 0, 1] + m[:, 1, 0] * m[:, 1, 1]).square().sum()
