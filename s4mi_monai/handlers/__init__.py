"""handlers of s4mi_monai."""
