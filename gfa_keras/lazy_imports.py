"""Public names that load their module on first access.

The package's top level and `gfa_keras.evaluation` export names whose modules are heavy
(cleverhans, Keras Tuner, matplotlib) or pull in the attacks; importing them only when a
name is used keeps `import gfa_keras` light.
"""
from __future__ import annotations

import importlib
import sys

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, names: dict[str, str]):
    """The `__getattr__` and `__dir__` of a package whose `names` load on first access.

    Args:
        package: The package's `__name__`.
        names: `{public name: module that defines it}`.

    Returns:
        `(__getattr__, __dir__)`, to assign at the package's top level. A loaded name is
        cached in the package, so `__getattr__` runs once per name.
    """

    def __getattr__(name):
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
