"""Image metrics for renders against reference images (the text-to-3D stand-in target's held-out views)."""
from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.functional.image import peak_signal_noise_ratio

from zoo.core.registry import register

__all__ = ["ImagePSNR", "MAX_DB"]

MAX_DB = 100.0


@register("metric", "psnr")
class ImagePSNR(Metric):
    """Peak signal-to-noise ratio of each image against its reference (data range ``data_range``), averaged
    over images: ``update(pred (B, ...), target (B, ...))`` in [0, data_range], ``compute() -> {"psnr": dB}``.

    Per image, as NeRF papers report it (the mean of per-view PSNRs, not the PSNR of the pooled error);
    computed by torchmetrics' ``peak_signal_noise_ratio`` over each image's elements, capped at
    :data:`MAX_DB` (identical images). ``needs_reference``
    tells a text-to-3D system to pass reference images (not prompts) as the second argument.
    """

    needs_reference = True
    main_key = "psnr"
    full_state_update = False

    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        if not data_range > 0:
            raise ValueError(f"psnr: data_range must be > 0, got {data_range}")
        self.data_range = float(data_range)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:  # noqa: D102
        if pred.shape != target.shape or pred.ndim < 2:
            raise ValueError(f"psnr.update: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the "
                             f"same shape (B, ...)")
        if not torch.isfinite(pred).all():
            raise ValueError("psnr.update: pred has NaN or inf values")
        for p, t in zip(pred.float(), target.float(), strict=True):
            # identical images have infinite PSNR; capped at MAX_DB so means and metrics.json stay finite
            self.total += peak_signal_noise_ratio(p, t, data_range=self.data_range).double().clamp(max=MAX_DB)
        self.count += pred.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:  # noqa: D102
        return {"psnr": (self.total / self.count.clamp_min(1)).float()}
