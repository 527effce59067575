"""Neural fields for text-to-3D (kind ``field``): hash-grid and dense-grid NeRFs, occupancy grids, mesh export.

``hash_nerf`` (:class:`~zoo.models.field.nerf.HashNeRF`) and ``dense_grid``
(:class:`~zoo.models.field.nerf.DenseGridNeRF`) share the API of
:class:`~zoo.models.field.nerf.NeRFField`; :mod:`zoo.models.field.mesh` turns a field into a
coloured mesh. Import the submodules directly (the registry imports only the one it needs).
"""
