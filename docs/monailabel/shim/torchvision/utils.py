"""The two names MONAI Label imports from ``torchvision.utils``; calling them says why they are missing."""

from typing import Any


def make_grid(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("torchvision is a stand-in here (docs/monailabel/shim): install a torchvision that matches your torch")


def save_image(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("torchvision is a stand-in here (docs/monailabel/shim): install a torchvision that matches your torch")
