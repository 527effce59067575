"""LightningModules that compose registered components into whole methods (DECO, InteractVLM, ...).

Nothing is imported here; the registry imports a system's module on lookup.
"""
