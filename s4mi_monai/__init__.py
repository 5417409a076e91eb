"""s4mi-monai: annotation-efficient self- and semi-supervised learning for medical images, on MONAI.

Subpackages load on first use (``s4mi_monai.networks.Classifier`` works after ``import s4mi_monai``), so a
bundle config can reach all of them through the one ``@s4mi_monai`` item that loads the package, from its own
``scripts/`` folder or from the installed package (see ``docs/sharing.md``).
"""

from importlib import import_module
from types import ModuleType

__version__ = "0.1.0"

SUBPACKAGES = ("bundle", "clustering", "data", "distributed", "engines", "handlers", "io", "losses", "metrics", "networks", "optim", "transforms", "visualize", "wsi")


def __getattr__(name: str) -> ModuleType:
    if name in SUBPACKAGES:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
