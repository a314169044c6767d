"""The Givens rotation core (paper Eq. 3): tree schedule, 2x2 blocks, the fast operator and dense R for merging.

Conventions are in ``blocks`` (how a block acts, column vs row vectors) and ``operator`` (how x @ R is computed).
"""

from qgoft_bench.rotation.blocks import angles_to_blocks, inverse_transpose_blocks
from qgoft_bench.rotation.operator import givens_matrix, givens_rotate
from qgoft_bench.rotation.schedule import givens_schedule, level_sizes, num_levels

__all__ = [
    "angles_to_blocks",
    "givens_matrix",
    "givens_rotate",
    "givens_schedule",
    "inverse_transpose_blocks",
    "level_sizes",
    "num_levels",
]
