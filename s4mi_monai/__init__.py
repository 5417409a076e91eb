"""s4mi-monai: annotation-efficient self- and semi-supervised learning for medical images, on MONAI."""

__version__ = "0.1.0"
