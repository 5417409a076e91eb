"""A stand-in for torchvision where the PyPI wheel cannot load beside a CPU build of torch ("torchvision::nms does not exist").

MONAI Label imports ``make_grid`` and ``save_image`` at the top of ``monailabel/transform/post.py`` and uses them
only to dump debug images, which the s4mi bundles never ask for. Put this folder first on ``PYTHONPATH``.
"""

__version__ = "0.0.0+s4mi.stub"
