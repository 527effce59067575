"""Callbacks the run tool attaches to contact systems: figures of predicted vs. ground-truth
contact on the body, written as PNGs into the run directory and logged to W&B."""
from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch


class ContactFigures(L.Callback):
    """On the first test batch, draw the system's own ``figures(batch, n)`` when it has that method;
    otherwise render predicted and ground-truth per-vertex contact for the first
    ``n`` samples on the template body from four views; save ``figures/contact_test_<i>.png`` and
    log them to W&B when the logger is a WandbLogger. Skipped (with a note) when the system's
    output has no ``contact`` or the body model files are missing."""

    def __init__(self, out_dir: str | Path, n: int = 3, model_type: str = "smpl"):
        self.out_dir = Path(out_dir)
        self.n = n
        self.model_type = model_type
        self.paths: list[Path] = []

    def _template(self):
        from zoo.body.model import BodyModel, default_body_model_dir

        body = BodyModel(str(default_body_model_dir()), model_type=self.model_type)
        with torch.no_grad():
            verts = body()["vertices"][0].cpu().numpy()
        return verts, body.faces.cpu().numpy()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: D102
        if batch_idx != 0 or not trainer.is_global_zero:
            return
        if hasattr(pl_module, "figures"):  # systems that draw their own figures (e.g. mvloc)
            self._system_figures(trainer, pl_module, batch)
            return
        if "contact_label" not in batch or "image" not in batch:
            return
        with torch.no_grad():
            out = pl_module(batch["image"][: self.n])
        pred = out.get("contact") if isinstance(out, dict) else None
        if pred is None:
            return
        try:
            verts, faces = self._template()
        except FileNotFoundError as e:
            print(f"note: contact figures skipped: {str(e).splitlines()[0]}")
            return
        from PIL import Image

        from zoo.core.atomic import atomic_open
        from zoo.render.viz import contact_views_image

        images = []
        for i in range(pred.shape[0]):
            p = pred[i].float().cpu().numpy()
            g = batch["contact_label"][i].float().cpu().numpy()
            title = os.path.basename(str(batch.get("imgname", [f"sample {i}"] * (i + 1))[i]))
            path = self.out_dir / f"contact_test_{i}.png"
            img = contact_views_image(verts, faces, p, g, title=f"{title}: predicted (top) | ground truth (bottom)")
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as fh:
                Image.fromarray(img).save(fh, format="PNG")
            self.paths.append(path)
            images.append(img)
        logger = trainer.logger
        if logger is not None and type(logger).__name__ == "WandbLogger":
            logger.log_image(key="test/contact", images=list(images),
                             caption=[p.name for p in self.paths[-len(images):]])

    def _system_figures(self, trainer, pl_module, batch) -> None:
        from zoo.render.viz import save_png

        try:
            figs = pl_module.figures(batch, self.n)
        except FileNotFoundError as e:
            print(f"note: figures skipped: {str(e).splitlines()[0]}")
            return
        paths = []
        for name, img in figs:
            path = self.out_dir / f"test_{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            paths.append(save_png(img, path))
        self.paths.extend(paths)
        logger = trainer.logger
        if figs and logger is not None and type(logger).__name__ == "WandbLogger":
            logger.log_image(key="test/figures", images=[img for _, img in figs], caption=[p.name for p in paths])
