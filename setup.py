"""Packages: ``qgoft_bench`` and the Hydra config tree ``conf/`` shipped inside it as ``qgoft_bench.conf``.

Every folder of ``conf/`` is a sub-package (it has an ``__init__.py``) so its YAML files travel as package data and
``@hydra.main(config_path="pkg://qgoft_bench.conf")`` finds them from any directory, editable install or not.
"""

from setuptools import find_packages, setup

conf_packages = ["qgoft_bench.conf"] + [f"qgoft_bench.conf.{name}" for name in find_packages("conf")]
setup(
    packages=find_packages(include=["qgoft_bench", "qgoft_bench.*"]) + conf_packages,
    package_dir={"qgoft_bench.conf": "conf"},
)
