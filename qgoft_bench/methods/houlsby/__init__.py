"""Houlsby and Pfeiffer bottleneck adapters (ours: PEFT 0.21.2 ships no bottleneck adapter); importing this package
registers ``houlsby_adapter`` and ``pfeiffer_adapter``."""

from qgoft_bench.methods.houlsby.config import AdapterConfig
from qgoft_bench.methods.houlsby.layer import BottleneckAdapterLayer
from qgoft_bench.methods.houlsby.model import BottleneckAdapterMethod, adapter_targets

__all__ = ["AdapterConfig", "BottleneckAdapterLayer", "BottleneckAdapterMethod", "adapter_targets"]
