"""Text -> body pose by CLIP retrieval over rendered key poses: InterFusion's anchor-pose codebook and the
AvatarCLIP-style baseline.

Both render each stored pose (body model, global orient 0, betas 0) from the azimuths 0 / 90 / 180 / 270
degrees with the CPU rasterizer (camera framing the posed body), embed the four renders with a CLIP image
encoder, average the normalised embeddings per pose and renormalise. A query text goes through the template
("a rendered 3d man is {interaction}") and the CLIP text encoder; the cosine top ``candidates``, then the
first ``top_k`` of those above ``min_similarity``, are the candidates, and ``pick`` chooses one:

* ``judge``: a local VLM (``vlm`` kind, e.g. llava) sees each candidate's 2x2 grid of views and the question
  "is this a rendered 3d man {interaction} ?"; the candidate whose answer "yes" (with the end of turn: the
  tokens ``build_inputs`` labels) has the highest log-probability wins (a forced choice, InterFusion's
  GPT-4V step done locally);
* ``sample``: a seeded random candidate (diversity; the generator advances from call to call);
* ``index``: the ``index``-th candidate; ``best``: the top cosine.

:class:`AnchorPoseCodebook` (``pose_prior/interfusion_codebook``) builds its key poses as the official
stage 1: VPoser means of the pose set, K-Means in the latent space (``clusters``, capped at the set size;
MiniBatchKMeans above 20k poses), centres decoded with VPoser. :class:`AvatarCLIPRetrieval`
(``pose_prior/avatarclip_retrieval``) keeps a uniform subsample of a mocap set (no VPoser, no K-Means).

The state dict holds only the built tables (``key_poses``, ``image_emb``, ``latents``, ``clip_key``); CLIP,
the body model, VPoser and the VLM are rebuilt from the sub-recipes and never stored. ``clip_key`` is the
SHA-256 identity of the CLIP that embedded the renders (its config.json and weight files): loading the
tables next to another CLIP is refused, naming the file and both identities.
"""
from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from zoo.core.hub import CheckpointError, Pretrained
from zoo.core.interfaces import PosePrior
from zoo.core.registry import register

__all__ = ["AnchorPoseCodebook", "AvatarCLIPRetrieval", "RenderRetrieval", "clip_identity", "kmeans_latents",
           "AZIMUTHS", "TEMPLATE", "JUDGE_QUESTION", "MINIBATCH_ABOVE"]

AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
TEMPLATE = "a rendered 3d man is {interaction}"
JUDGE_QUESTION = "is this a rendered 3d man {interaction} ?"
PICKS = ("judge", "sample", "index", "best")
MINIBATCH_ABOVE = 20_000  # poses; above this K-Means runs mini-batch (55k poses x 2048 centres in minutes)
_CLIP_KEYS = ("path", "variant", "dtype")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def clip_identity(root: str | Path) -> bytes:
    """32-byte SHA-256 identity of a CLIP directory: its config.json and, per weight file (sorted), the
    name, the size and the first and last MiB (a different checkpoint differs there; hashing gigabytes
    on every load would not pay)."""
    root = Path(root)
    h = hashlib.sha256((root / "config.json").read_bytes())
    for f in sorted(p for p in root.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
    return h.digest()


def _hex(key: bytes | torch.Tensor) -> str:
    raw = bytes(key.tolist()) if isinstance(key, torch.Tensor) else bytes(key)
    return raw.hex()[:16] if any(raw) else "none"


def kmeans_latents(latents: np.ndarray, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(centres (K, Z), labels (N,)) of K-Means on ``latents`` (N, Z), K = min(clusters, N).

    ``random_state=seed`` as the official stage 1 (seed 0). Up to :data:`MINIBATCH_ABOVE` points: full
    KMeans with k-means++ seeding; ``n_init=4`` below 256 centres (cheap there, and it guards a small set
    against one unlucky seeding), 1 from 256 on (the k-means++ seeding dominates the cost at many centres:
    5000 x 2048 took 134 s with 4 restarts and 47 s with one on a shared core, and with that many centres a
    restart barely moves the inertia). Above: MiniBatchKMeans (batch 4096, ``n_init=3``; 55k x 2048 in about 70 s on one core),
    since full Lloyd iterations over 55k x 2048 x 32 per restart are what make the full version slow.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = np.asarray(latents, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"kmeans_latents: expected latents (N >= 1, Z), got {x.shape}")
    k = min(int(clusters), x.shape[0])
    if k < 1:
        raise ValueError(f"kmeans_latents: clusters must be >= 1, got {clusters}")
    if x.shape[0] > MINIBATCH_ABOVE:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=4 if k < 256 else 1)
    labels = km.fit_predict(x)
    return km.cluster_centers_.astype(np.float32), labels.astype(np.int64)


def _poses_tensor(poses: Any, owner: str) -> torch.Tensor:
    p = torch.as_tensor(np.asarray(poses) if not isinstance(poses, torch.Tensor) else poses, dtype=torch.float32)
    if p.ndim == 2 and p.shape[1] == 63:
        p = p.reshape(-1, 21, 3)
    if p.ndim != 3 or tuple(p.shape[1:]) != (21, 3) or p.shape[0] < 1:
        raise ValueError(f"{owner}.build: expected poses (N, 21, 3) or (N, 63) axis-angle body poses, got "
                         f"{tuple(p.shape)}")
    if not torch.isfinite(p).all():
        raise ValueError(f"{owner}.build: poses hold NaN or inf")
    return p


class RenderRetrieval(Pretrained, PosePrior, L.LightningModule):
    """Shared base: the render + CLIP tables, retrieval, picks, renders, CLIP identity checks.

    Subclasses call :meth:`_setup` from their ``__init__`` (after ``save_hyperparameters``) and implement
    :meth:`_key_poses` (the poses to store, from a pose set)."""

    latent_dim = 0  # latents stored per key pose (VPoser's Z for the codebook)

    def _setup(self, clip: dict | None, body_model: dict | None, candidates: int, top_k: int, pick: str,
               index: int, judge: dict | None, template: str, min_similarity: float, image_size: int,
               seed: int, size: int) -> None:
        from zoo.models.guidance.clip import CLIPEncoder

        owner = type(self).__name__
        for name, v in (("candidates", candidates), ("top_k", top_k), ("image_size", image_size)):
            if int(v) < 1:
                raise ValueError(f"{owner}: {name} must be >= 1, got {v}")
        if pick not in PICKS:
            raise ValueError(f"{owner}: pick must be one of {', '.join(PICKS)}, got {pick!r}")
        if pick == "judge" and not judge:
            raise ValueError(f"{owner}: pick='judge' needs judge: a vlm sub-recipe (e.g. {{name: llava, path: DIR}} "
                             f"or {{name: llava, variant: tiny}}); or pick sample / index / best")
        if int(index) < 0 or int(index) >= int(top_k):
            raise ValueError(f"{owner}: index must be in [0, top_k={top_k}), got {index}")
        if "{interaction}" not in template:
            raise ValueError(f"{owner}: template must contain {{interaction}}, got {template!r}")
        if int(size) < 0:
            raise ValueError(f"{owner}: size must be >= 0 (0: not built yet), got {size}")
        clip = dict(clip or {})
        unknown = sorted(set(clip) - set(_CLIP_KEYS))
        if unknown:
            raise ValueError(f"{owner}: unknown clip key(s) {unknown}; expected some of {', '.join(_CLIP_KEYS)}")
        self.__dict__["_parts"] = {"clip": CLIPEncoder(clip.get("path"), clip.get("variant", "full"),
                                                       clip.get("dtype", "float32"), owner=owner)}
        self._body_cfg = dict(body_model or {"name": "smplx"})
        self._judge_cfg = dict(judge) if judge else None
        self._clip_digest = clip_identity(self.clip.root)
        self._renders: dict[int, np.ndarray] = {}
        self._rng = np.random.default_rng(int(seed))
        self.last_scores: list[tuple[int, float]] = []
        d = int(self.clip.model.config.projection_dim)
        k = int(size)
        self.register_buffer("key_poses", torch.zeros(k, 21, 3))
        self.register_buffer("image_emb", torch.zeros(k, d))
        if self.latent_dim:
            self.register_buffer("latents", torch.zeros(k, self.latent_dim))
        self.register_buffer("clip_key", torch.zeros(32, dtype=torch.uint8))

    # ------------------------------------------------------------------ parts (never in the state dict)
    @property
    def clip(self):
        """The CLIP encoder (zoo.models.guidance.clip.CLIPEncoder), frozen, outside the module tree."""
        return self.__dict__["_parts"]["clip"]

    @property
    def body_model(self) -> torch.nn.Module:
        """The body model of ``body_model`` (built on first use)."""
        parts = self.__dict__["_parts"]
        if "body" not in parts:
            from zoo.core import registry

            parts["body"] = registry.build("body_model", self._body_cfg).eval()
        return parts["body"]

    @property
    def judge(self) -> Any:
        """The VLM judge of ``judge`` (built on first use; never in the state dict)."""
        parts = self.__dict__["_parts"]
        if "judge" not in parts:
            if self._judge_cfg is None:
                raise ValueError(f"{type(self).__name__}: no judge configured (judge: a vlm sub-recipe)")
            from zoo.core import registry

            parts["judge"] = registry.build("vlm", self._judge_cfg).eval()
        return parts["judge"]

    def _apply(self, fn, *args, **kwargs):
        from zoo.models.guidance.clip import follow_device

        out = super()._apply(fn, *args, **kwargs)
        follow_device(self.clip, fn)
        return out

    @property
    def size(self) -> int:
        """K, the number of stored key poses (0 before :meth:`build`)."""
        return int(self.key_poses.shape[0])

    # ------------------------------------------------------------------ CLIP identity
    def _source(self) -> str:
        rec = self.__dict__.get("_zoo_weights")
        return rec["path"] if rec else "this codebook (built in memory)"

    def _mismatch(self, stored: torch.Tensor, where: str) -> str:
        return (f"{where}: the codebook was built with CLIP {_hex(stored)}, but the CLIP configured here "
                f"({self.clip.root}) is {_hex(self._clip_digest)}; its image embeddings only make sense with the "
                f"CLIP that made them: load it with that CLIP, or rebuild it (tools/make_codebook.py)")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        stored = state_dict.get(prefix + "clip_key")
        if isinstance(stored, torch.Tensor) and stored.numel() == 32 and bool(stored.any()) \
                and bytes(stored.to(torch.uint8).tolist()) != self._clip_digest:
            raise CheckpointError(self._mismatch(stored, _loading_file()))
        # A codebook of another size than the constructor's: take the file's shapes (hparams `size` is 0
        # when the caller builds first and loads second).
        for name in ("key_poses", "image_emb", "latents"):
            t = state_dict.get(prefix + name)
            own = self._buffers.get(name)
            if isinstance(t, torch.Tensor) and own is not None and t.shape[1:] == own.shape[1:] \
                    and t.shape[0] != own.shape[0]:
                self._buffers[name] = torch.zeros_like(t, device=own.device, dtype=own.dtype)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.hparams["size"] = self.size
        self._renders.clear()

    def convert_checkpoint(self, obj: Any, source: str) -> dict:
        """A codebook export (or its state dict) as is; the buffers take the file's number of key poses."""
        state = super().convert_checkpoint(obj, source)
        need = ["key_poses", "image_emb", "clip_key"] + (["latents"] if self.latent_dim else [])
        missing = [k for k in need if k not in state]
        if missing:
            got = ", ".join(map(str, list(state)[:5]))
            raise CheckpointError(f"{source}: not a {type(self).__name__} export: missing {', '.join(missing)} "
                                  f"(got {got or 'no keys'}); expected {', '.join(need)}")
        stored = torch.as_tensor(state["clip_key"]).to(torch.uint8)
        if bool(stored.any()) and bytes(stored.tolist()) != self._clip_digest:
            raise CheckpointError(self._mismatch(torch.as_tensor(stored), source))
        for name in (k for k in need if k != "clip_key"):
            own = self._buffers[name]
            if tuple(state[name].shape[1:]) == tuple(own.shape[1:]):
                self._buffers[name] = torch.zeros_like(state[name], dtype=own.dtype)
        return state

    def _check_ready(self) -> None:
        if self.size == 0:
            raise ValueError(f"{type(self).__name__}: the codebook is empty; build(poses) first, or load a built one "
                             f"(tools/make_codebook.py writes them)")
        if bytes(self.clip_key.tolist()) != self._clip_digest:
            raise CheckpointError(self._mismatch(self.clip_key, self._source()))

    # ------------------------------------------------------------------ rendering
    def _body_vertices(self, poses: torch.Tensor) -> torch.Tensor:
        """Posed vertices (B, V, 3) of body poses (B, 21, 3): global orient 0, betas 0, hands flat."""
        body = self.body_model
        flat = poses.reshape(poses.shape[0], 63).to(body.v_template)
        if body.model_type == "smpl":  # SMPL's body pose also has its two hand joints
            flat = torch.cat([flat, flat.new_zeros(flat.shape[0], 6)], 1)
        with torch.no_grad():
            return body(body_pose=flat)["vertices"]

    def _views(self, verts: torch.Tensor) -> torch.Tensor:
        """The 4 azimuth renders (4, S, S, 3) in [0, 1] of one posed body (V, 3), camera framing the body."""
        from zoo.render.cameras import framing_pose, intrinsics
        from zoo.render.raster import render_mesh

        s = int(self.hparams.image_size)
        f = 1.2 * s  # a ~45 degree field of view
        K = intrinsics(f, f, s / 2, s / 2)
        pts = verts.detach().double().cpu().numpy()
        faces = self.body_model.faces
        out = []
        for az in AZIMUTHS:
            # Elevation 0, the body filling 90% of the image's height or width whatever the pose.
            R, t = framing_pose(pts, math.radians(az), 0.0, f, 0.45 * s)
            cam = torch.from_numpy(pts @ R.T + t).float()
            out.append(render_mesh(cam, faces, K, s, s))
        return torch.stack(out)

    def renders(self, index: int) -> np.ndarray:
        """uint8 (2S, 2S, 3) grid of key pose ``index``'s views: azimuth 0 | 90 over 180 | 270 (memoised)."""
        k = self.size
        if not 0 <= int(index) < k:
            raise IndexError(f"{type(self).__name__}.renders: index {index} out of range for {k} key poses")
        i = int(index)
        if i not in self._renders:
            v = self._views(self._body_vertices(self.key_poses[i:i + 1].cpu())[0])
            grid = torch.cat([torch.cat([v[0], v[1]], 1), torch.cat([v[2], v[3]], 1)], 0)
            self._renders[i] = (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return self._renders[i]

    @torch.no_grad()
    def _embed_poses(self, poses: torch.Tensor, progress: bool, chunk: int = 16) -> torch.Tensor:
        """(K, D) normalised mean CLIP image embedding of each pose's 4 renders."""
        from tqdm.auto import tqdm

        embs = []
        bar = tqdm(total=poses.shape[0], desc=f"{type(self).__name__}: render + CLIP", unit="pose",
                   disable=not progress, file=sys.stderr)
        for a in range(0, poses.shape[0], chunk):
            verts = self._body_vertices(poses[a:a + chunk])
            views = torch.cat([self._views(v) for v in verts])  # (4 n, S, S, 3)
            e = self.clip.encode_images(views.permute(0, 3, 1, 2).contiguous()).cpu()
            e = F.normalize(e.reshape(-1, len(AZIMUTHS), e.shape[-1]).mean(1), dim=-1)
            embs.append(e)
            bar.update(verts.shape[0])
        bar.close()
        return torch.cat(embs)

    def _key_poses(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def build(self, poses: Any, progress: bool = True) -> RenderRetrieval:
        """Fill the tables from a pose set (N, 21, 3) (or (N, 63)); returns self. ``hparams.size`` records K."""
        import time

        p = _poses_tensor(poses, type(self).__name__)
        t0 = time.perf_counter()
        key, latents = self._key_poses(p)
        t1 = time.perf_counter()
        emb = self._embed_poses(key, progress)
        # Wall seconds of the two stages (tools/make_codebook.py and the benchmark report them).
        self.build_seconds = {"poses": int(p.shape[0]), "key_poses": int(key.shape[0]), "select": t1 - t0,
                              "render_clip": time.perf_counter() - t1}
        dev = self.key_poses.device
        self.key_poses = key.float().to(dev)
        self.image_emb = emb.float().to(dev)
        if self.latent_dim:
            self.latents = latents.float().to(dev)
        self.clip_key = torch.tensor(list(self._clip_digest), dtype=torch.uint8, device=dev)
        self.hparams["size"] = self.size
        self._renders.clear()
        return self

    # ------------------------------------------------------------------ retrieval and picks
    def similarities(self, interaction: str) -> torch.Tensor:
        """(K,) cosine between every key pose's image embedding and the template's text embedding."""
        self._check_ready()
        if not isinstance(interaction, str) or not interaction.strip():
            raise ValueError(f"{type(self).__name__}: expected an interaction text, got {interaction!r}")
        text = self.hparams.template.format(interaction=interaction.strip())
        t = self.clip.encode_texts([text])[0].to(self.image_emb)
        return self.image_emb @ t

    def retrieve(self, interaction: str) -> list[tuple[int, float]]:
        """[(index, cosine)] best first: the first ``top_k`` of the cosine top ``candidates`` that reach
        ``min_similarity``. None reaching it raises ValueError listing the nearest three."""
        hp = self.hparams
        sims = self.similarities(interaction)
        n = min(int(hp.candidates), self.size)
        vals, idx = sims.topk(n)
        top = [(int(i), float(v)) for i, v in zip(idx.tolist(), vals.tolist(), strict=True)][: int(hp.top_k)]
        keep = [(i, s) for i, s in top if s >= float(hp.min_similarity)]
        if not keep:
            near = ", ".join(f"#{i} ({s:.3f})" for i, s in top[:3])
            raise ValueError(f"{type(self).__name__}: no key pose matches {interaction!r} above min_similarity="
                             f"{float(hp.min_similarity):g} (the nearest: {near}); lower min_similarity or "
                             f"rephrase the interaction")
        return keep

    def judge_scores(self, interaction: str, candidates: list[tuple[int, float]]) -> list[float]:
        """Per candidate, the judge VLM's log-probability of answering "yes" (and ending its turn) to
        :data:`JUDGE_QUESTION` about the candidate's 2x2 render grid."""
        from zoo.models.vlm.base import answer_logprob

        question = JUDGE_QUESTION.format(interaction=interaction.strip())
        return [answer_logprob(self.judge, self.renders(i), question) for i, _ in candidates]

    def pick(self, interaction: str, candidates: list[tuple[int, float]] | None = None) -> int:
        """The key pose index chosen among ``candidates`` (default: :meth:`retrieve`) by ``pick``."""
        cands = self.retrieve(interaction) if candidates is None else list(candidates)
        if not cands:
            raise ValueError(f"{type(self).__name__}.pick: no candidates for {interaction!r}")
        how = self.hparams.pick
        if how == "best":
            return int(max(cands, key=lambda c: c[1])[0])
        if how == "index":
            i = int(self.hparams.index)
            if i >= len(cands):
                raise ValueError(f"{type(self).__name__}: index={i} but only {len(cands)} candidate(s) for "
                                 f"{interaction!r} reach min_similarity")
            return int(cands[i][0])
        if how == "sample":
            return int(cands[int(self._rng.integers(len(cands)))][0])
        scores = self.judge_scores(interaction, cands)
        self.last_scores = [(int(c[0]), s) for c, s in zip(cands, scores, strict=True)]
        return int(cands[int(np.argmax(scores))][0])

    def forward(self, query: str | list[str]) -> torch.Tensor:
        """Body poses (B, 21, 3) axis-angle for interaction text(s): retrieve, pick, return the key pose."""
        texts = [query] if isinstance(query, str) else list(query)
        if not texts:
            raise ValueError(f"{type(self).__name__}.forward: expected a text or a non-empty list of texts")
        return torch.stack([self.key_poses[self.pick(t)] for t in texts])


def _loading_file() -> str:
    """The file whose state dict is being loaded, when the load goes through zoo.core.hub (its loader's
    ``source`` / ``path``), so a refusal can name it; else a generic description."""
    frame = sys._getframe(1)
    while frame is not None:
        # hub's loaders hold the file in a local; reading it beats threading a path through torch's
        # load_state_dict, which has no room for one.
        if frame.f_globals.get("__name__") == "zoo.core.hub":
            for name in ("source", "path", "weights"):
                val = frame.f_locals.get(name)
                if isinstance(val, (str, Path)):
                    return str(val)
        frame = frame.f_back
    return "the state dict being loaded"


@register("pose_prior", "interfusion_codebook")
class AnchorPoseCodebook(RenderRetrieval):
    """InterFusion's anchor-pose codebook: VPoser + K-Means key poses, retrieved by CLIP (see the module doc).

    ``forward(query: str | list[str]) -> (B, 21, 3)``; ``build(poses (N, 21, 3))``; ``retrieve(text)``;
    ``pick(text, candidates)``; ``renders(index) -> uint8 (2S, 2S, 3)``. ``vposer`` / ``clip`` /
    ``body_model`` / ``judge``: sub-recipes (``clip``: {path | variant, dtype}); ``weights``: a codebook export
    (the same CLIP required); ``size``: the number of key poses, recorded by ``build`` (0: empty).
    """

    def __init__(self, vposer: dict | None = None, clip: dict | None = None, body_model: dict | None = None,
                 clusters: int = 2048, candidates: int = 40, top_k: int = 7, pick: str = "judge", index: int = 0,
                 judge: dict | None = None, template: str = TEMPLATE, min_similarity: float = 0.0,
                 image_size: int = 224, seed: int = 0, size: int = 0, weights: str | None = None) -> None:
        super().__init__()
        if int(clusters) < 1:
            raise ValueError(f"AnchorPoseCodebook: clusters must be >= 1, got {clusters}")
        self.save_hyperparameters()
        self._vposer_cfg = dict(vposer or {"name": "vposer"})
        self.latent_dim = int(self._vposer_cfg.get("latent_dim", 32))
        self._setup(clip, body_model, candidates, top_k, pick, index, judge, template, min_similarity, image_size,
                    seed, size)

    @property
    def vposer(self) -> torch.nn.Module:
        """The VPoser of ``vposer`` (built on first use, weights loaded; never in the state dict)."""
        parts = self.__dict__["_parts"]
        if "vposer" not in parts:
            from zoo.core import registry
            from zoo.models.pose.vposer import VPoser

            cfg = dict(self._vposer_cfg)
            name = cfg.pop("name", "vposer")
            if name != "vposer":
                raise ValueError(f"AnchorPoseCodebook: vposer.name must be 'vposer', got {name!r}")
            parts["vposer"] = registry.materialize(VPoser(**cfg)).eval()
            if parts["vposer"].latent_dim != self.latent_dim:
                raise ValueError(f"AnchorPoseCodebook: VPoser latent_dim {parts['vposer'].latent_dim} != {self.latent_dim}")
        return parts["vposer"]

    @torch.no_grad()
    def _key_poses(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vp = self.vposer
        mus = torch.cat([vp.encode(poses[a:a + 4096])[0].float().cpu() for a in range(0, poses.shape[0], 4096)])
        centres, _ = kmeans_latents(mus.numpy(), int(self.hparams.clusters), int(self.hparams.seed))
        z = torch.from_numpy(centres)
        return vp.decode(z).float().cpu(), z


@register("pose_prior", "avatarclip_retrieval")
class AvatarCLIPRetrieval(RenderRetrieval):
    """AvatarCLIP-style baseline: the same render + CLIP retrieval over a uniform subsample of at most
    ``max_poses`` poses of a mocap set (no VPoser, no K-Means, no HOI-specific poses)."""

    def __init__(self, clip: dict | None = None, body_model: dict | None = None, max_poses: int = 4096,
                 candidates: int = 40, top_k: int = 7, pick: str = "best", index: int = 0, judge: dict | None = None,
                 template: str = TEMPLATE, min_similarity: float = 0.0, image_size: int = 224, seed: int = 0,
                 size: int = 0, weights: str | None = None) -> None:
        super().__init__()
        if int(max_poses) < 1:
            raise ValueError(f"AvatarCLIPRetrieval: max_poses must be >= 1, got {max_poses}")
        self.save_hyperparameters()
        self._setup(clip, body_model, candidates, top_k, pick, index, judge, template, min_similarity, image_size,
                    seed, size)

    def _key_poses(self, poses: torch.Tensor) -> tuple[torch.Tensor, None]:
        n = poses.shape[0]
        m = min(int(self.hparams.max_poses), n)
        # Uniform in the set's order (mocap sets are sequences: a stride spreads the picks over the motions).
        idx = np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))
        return poses[torch.from_numpy(idx)].clone(), None
