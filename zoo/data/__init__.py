"""Datasets: LightningDataModules for the released formats (DAMON, ...) and synthetic generators writing them."""
