"""Explaining trained networks: gradient saliency maps and the panels that show them."""

from .saliency import bundle_saliency, saliency_maps, write_item_saliency, write_saliency_panels

__all__ = ["bundle_saliency", "saliency_maps", "write_item_saliency", "write_saliency_panels"]
