"""Core: registry, recipes, checkpoint store and run loop. Imports nothing else from zoo."""
__version__ = "0.1.0"
