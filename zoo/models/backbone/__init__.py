"""Image feature backbones (registry kind `backbone`)."""
