"""losses of s4mi_monai."""
