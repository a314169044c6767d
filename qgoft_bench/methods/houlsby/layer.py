"""The bottleneck adapter wrapped around a frozen layer: y = h + up(act(down(h))) with h = base(x).

Rows are samples: ``h`` is (..., d) with d = ``base.out_features``; down is d -> m, up is m -> d. The up projection
starts at zero, so an adapted model computes exactly what the pretrained one did until training moves it.
"""

from torch import Tensor, nn

ACTIVATION_MODULES: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}


class BottleneckAdapterLayer(nn.Module):
    """``base`` (frozen) followed by a residual bottleneck adapter on its output."""

    def __init__(self, base: nn.Linear, bottleneck: int, activation: str = "gelu", init_std: float = 1e-2) -> None:
        super().__init__()
        self.base = base
        width = base.out_features
        # on the base layer's device and dtype, so that a meta-device model stays on meta (parameter counting)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.down = nn.Linear(width, bottleneck, **factory)
        self.act = ACTIVATION_MODULES[activation]()
        self.up = nn.Linear(bottleneck, width, **factory)
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.base(x)
        return h + self.up(self.act(self.down(h)))
