"""engines of s4mi_monai."""
