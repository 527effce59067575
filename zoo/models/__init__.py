"""Neural-network building blocks, grouped by kind (backbone/, heads/, vlm/, localizer/, ...).

Nothing is imported here so that `import zoo.models.<kind>.<file>` pulls in only what it needs.
"""
