"""Core: registry, recipes, checkpoint store and run glue. Imports nothing else from zoo."""
