"""Datasets: LightningDataModules for the released formats (``damon``, ``piad``, ``lemon``) over shared
readers (``formats``), loaders and samplers (``base``, ``sampling``), and the synthetic generators writing
those formats (``synthetic``)."""
