import shutil

import pytest

from qgoft_bench.rotation import cpu_kernel


@pytest.fixture
def built_kernel(monkeypatch: pytest.MonkeyPatch):
    """The C++ rotation kernel, selected for this test: skipped without a compiler, a failure if one is here and the
    kernel does not build (a broken build must not pass as "no kernel on this machine")."""
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the kernel cannot be built here")
    monkeypatch.setenv(cpu_kernel.ENV, "kernel")
    built = cpu_kernel.load()
    assert built is not None, "a C++ compiler is here but the rotation kernel did not build"
    return built
