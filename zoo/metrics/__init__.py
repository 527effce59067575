"""torchmetrics Metrics for evaluation (contact, affordance, CLIP score).

Kept import-free so that ``import zoo.metrics.<module>`` only pulls in what that
module needs; look metrics up through the registry (kind ``metric``).
"""
