"""Body models and mesh operations: smplx wrapper (model), synthetic SMPL/SMPL-H files (synthetic),
InteractVLM's canonical pose (canonical), exact surface geodesics (or the released SMPL matrix), part
labels and normals (mesh), joint names and trees (skeleton)."""
