"""Body models and mesh operations: smplx wrapper (model), synthetic SMPL/SMPL-H files (synthetic),
geodesics, part labels and normals (mesh), joint names and trees (skeleton)."""
