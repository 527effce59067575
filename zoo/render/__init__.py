"""Rendering: a vectorised CPU rasterizer (``raster``), OpenCV-style camera helpers and contact views (``viz``)."""
