"""Rendering: camera math (``cameras``), a vectorised CPU rasterizer (``raster``) and point rasterizer
(``points``), InteractVLM's fixed-view renderer with pixel<->vertex lift maps (``multiview``, ``lift``),
the pytorch3d reference backend (``p3d``) and contact figures (``viz``). It renders meshes it is given;
posing body models is :mod:`zoo.body`'s job."""
