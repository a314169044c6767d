"""What every sparse method shares: exact sparsity as trainable value vectors (``layer``), the selection of the top
entries and the method lifecycle (``model``)."""

from qgoft_bench.methods.sparse.config import SparseConfig
from qgoft_bench.methods.sparse.layer import SparseValues, budget, install, merge, top_entries
from qgoft_bench.methods.sparse.model import SparseMethod, gradient_sums

__all__ = ["SparseConfig", "SparseMethod", "SparseValues", "budget", "gradient_sums", "install", "merge",
           "top_entries"]
