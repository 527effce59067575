"""torchmetrics Metrics for evaluation (contact, affordance, CLIP score).

Contact metrics take ``convention: deco | interactvlm`` and affordance metrics ``convention:
iagnet | interactvlm`` (the official evaluation rules each reproduces; tables in
:mod:`zoo.metrics.contact` and :mod:`zoo.metrics.affordance`). Kept import-free so that
``import zoo.metrics.<module>`` only pulls in what that module needs; look metrics up through
the registry (kind ``metric``).
"""
