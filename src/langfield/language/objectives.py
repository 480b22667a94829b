"""Language distillation steps as :class:`~langfield.methods.base.Method` objectives for the one Trainer.

Each objective owns the module it optimises (a language field, or its autoencoder) and reads
precomputed, frozen inputs (per-view geometry, teacher targets) that stay plain attributes, so a
checkpoint holds only the parameters. Batches are :class:`~langfield.types.IndexBatch` from an
:class:`~langfield.data.samplers.IndexSampler`; any further per-step randomness (footprint jitter)
is drawn from the batch's own seed, so a step is a pure function of its index and resuming is exact.

* :class:`AutoencoderObjective` — the per-scene autoencoder on the targets' feature rows
  (LangSplat, Qin et al. 2024, Sec. 3.3; the reconstruction loss of
  :meth:`~langfield.fields.semantic.FeatureAutoencoder.loss`).
* :class:`GaussianCodesObjective` — per-Gaussian codes rendered through the frozen projection of
  one random training view, L1 to the encoded targets (LangSplat Sec. 3.4).
* :class:`NGPFeatureObjective` — the hash-grid head rendered with the frozen NGP weights of random
  training rays (LERF, Kerr et al. 2023, Sec. 3.2): L1 on codes (latent head) or the squared error
  of the unit-normalised render to the unit target (full-dimensional head).

Both field objectives take an optional :class:`LabelTerm`: OV-NeRF's relevancy cross-entropy
(RSR regularisation, and CSE's novel views; :mod:`langfield.language.ovnerf_rsr`) added to the
feature loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from langfield.fields.language_fields import GaussianLanguageField, NGPLanguageField, RayWeights, SplatView
from langfield.fields.semantic import FeatureAutoencoder
from langfield.language.ovnerf_rsr import relevancy_cross_entropy
from langfield.methods.base import Method
from langfield.types import IndexBatch

__all__ = ["AutoencoderObjective", "GaussianCodesObjective", "LabelTerm", "NGPFeatureObjective", "decaying_adam"]


@dataclass(frozen=True)
class LabelTerm:
    """OV-NeRF's relevancy cross-entropy on region labels, added to a field objective's loss.

    Attributes:
        text: ``[C, E]`` label text embeddings.
        labels: labels of the training views: ``[V*H*W]`` (NGP, rays concatenated) or
            ``[V, H, W]`` (Gaussians) int64, ``-1`` = ignored.
        weight: of the cross-entropy (each of the two terms).
        temperature: of the relevancy logits.
        novel_geometry: frozen geometry of CSE's novel views (NGP: one :class:`RayWeights` of all
            their rays; Gaussians: a list of :class:`SplatView`), or ``None``.
        novel_labels: their labels (``[N*H*W]`` or ``[N, H, W]``), or ``None``.
    """

    text: Tensor
    labels: Optional[Tensor]
    weight: float = 1.0
    temperature: float = 0.1
    novel_geometry: Any = None
    novel_labels: Optional[Tensor] = None

    def loss(self, features: Tensor, labels: Tensor) -> Tensor:
        """``weight *`` cross-entropy of rendered ``features [..., E]`` to ``labels [...]``."""
        e = features.shape[-1]
        text = self.text.to(features.device, features.dtype)
        return self.weight * relevancy_cross_entropy(
            features.reshape(-1, e), text, labels.reshape(-1).to(features.device), self.temperature
        )


def decaying_adam(params: Any, lr: float, max_steps: int, **kwargs: Any) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
    """Adam whose learning rate decays ``lr -> lr / 10`` exponentially over ``max_steps`` steps."""
    opt = torch.optim.Adam(params, lr=lr, **kwargs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 ** (s / max(max_steps, 1)))
    return [opt], [sched]


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


class AutoencoderObjective(Method):
    """Fit ``autoencoder`` to random rows of ``targets`` ``[P, E]`` (kept on the CPU)."""

    supports_ddp = False

    def __init__(self, autoencoder: FeatureAutoencoder, targets: Tensor, lr: float = 1e-3) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.targets = targets
        self.lr = lr

    def outputs(self, batch: IndexBatch) -> Tensor:
        rows = self.targets[batch.indices.cpu()].float().to(batch.indices.device)
        loss, _ = self.autoencoder.loss(rows)
        return loss

    def losses(self, outputs: Tensor, batch: IndexBatch) -> Dict[str, Tensor]:
        return {"loss": outputs}

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        return [torch.optim.Adam(self.autoencoder.parameters(), lr=self.lr)], []


class GaussianCodesObjective(Method):
    """Per-Gaussian codes of ``field`` fitted view by view (``batch.indices[0]`` is the view).

    Args:
        field: the :class:`GaussianLanguageField` (its autoencoder stays fixed).
        views: frozen :class:`SplatView` of every training view.
        latent_targets: ``[V, H, W, d]`` encoded teacher targets (CPU).
        lr: Adam learning rate of the codes (decayed x0.1 over the fit).
    """

    supports_ddp = False

    def __init__(
        self, field: GaussianLanguageField, views: List[SplatView], latent_targets: Tensor, lr: float,
        label_term: Optional[LabelTerm] = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if len(views) != latent_targets.shape[0]:
            raise ValueError(f"{len(views)} views but targets for {latent_targets.shape[0]}")
        self.field = field
        self.views, self.latent_targets, self.lr = views, latent_targets, lr
        self.label_term = label_term

    def outputs(self, batch: IndexBatch) -> Tuple[Tensor, int]:
        v = int(batch.indices[0])
        return self.field.render_codes(self.views[v]), v

    def losses(self, outputs: Tuple[Tensor, int], batch: IndexBatch) -> Dict[str, Tensor]:
        pred, v = outputs
        out = {"loss": (pred - self.latent_targets[v].to(pred.device)).abs().mean()}
        term = self.label_term
        if term is None:
            return out
        ae = self.field.autoencoder
        if term.labels is not None:
            out["relevancy"] = term.loss(ae.decode(pred), term.labels[v])
            out["loss"] = out["loss"] + out["relevancy"]
        if term.novel_geometry:
            n = int(torch.randint(len(term.novel_geometry), (1,), generator=_generator(batch.seed)))
            out["relevancy_novel"] = term.loss(self.field.render(term.novel_geometry[n]), term.novel_labels[n])
            out["loss"] = out["loss"] + out["relevancy_novel"]
        return out

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        return decaying_adam([self.field.codes, self.field.background_code], self.lr, max_steps, eps=1e-15)


class NGPFeatureObjective(Method):
    """The NGP language head fitted on random training rays with their frozen weights.

    Args:
        field: the :class:`NGPLanguageField`.
        rays: frozen :class:`RayWeights` of every training pixel, views concatenated (``[V*H*W]``).
        targets: ``[V*H*W, d or E]`` per-ray targets (codes for a latent head, else unit embeddings).
        lr: Adam learning rate (decayed x0.1 over the fit).
        footprint_jitter: samples move by Gaussian noise of this many pixel-footprint radii
            (:meth:`RayWeights.jittered`), drawn from the batch's seed.
        normalize_rendered: full-dimensional head: compare the unit-normalised render (LERF Sec. 3.2).
    """

    supports_ddp = False

    def __init__(
        self, field: NGPLanguageField, rays: RayWeights, targets: Tensor, lr: float, footprint_jitter: float = 1.0,
        normalize_rendered: bool = True, label_term: Optional[LabelTerm] = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if len(rays) != targets.shape[0]:
            raise ValueError(f"{len(rays)} rays but {targets.shape[0]} targets")
        if label_term is not None and label_term.labels is not None and label_term.labels.shape != (len(rays),):
            raise ValueError(f"{len(rays)} rays but label_term.labels is {tuple(label_term.labels.shape)}")
        self.field = field
        self.rays, self.targets, self.lr = rays, targets, lr
        self.footprint_jitter, self.normalize_rendered = footprint_jitter, normalize_rendered
        self.label_term = label_term

    def outputs(self, batch: IndexBatch) -> Tensor:
        idx = batch.indices.cpu()
        sub = self.rays.select(idx).jittered(_generator(batch.seed), self.footprint_jitter).to(batch.indices.device)
        if self.field.autoencoder is not None:
            return self.field.render_codes(sub)
        pred = self.field.render(sub)
        return F.normalize(pred, dim=-1) if self.normalize_rendered else pred

    def losses(self, outputs: Tensor, batch: IndexBatch) -> Dict[str, Tensor]:
        target = self.targets[batch.indices.cpu()].float().to(outputs.device)
        ae = self.field.autoencoder
        if ae is not None:
            out = {"loss": (outputs - target).abs().mean()}
        else:
            out = {"loss": ((outputs - target) ** 2).sum(-1).mean()}
        term = self.label_term
        if term is None:
            return out
        if term.labels is not None:
            feats = outputs if ae is None else ae.decode(outputs)
            out["relevancy"] = term.loss(feats, term.labels[batch.indices.cpu()])
            out["loss"] = out["loss"] + out["relevancy"]
        if term.novel_geometry is not None and len(term.novel_geometry) > 0:
            # As many novel-view rays as training rays, drawn from the batch's seed (resumable).
            gen = _generator(batch.seed + 1)
            idx = torch.randint(len(term.novel_geometry), (len(batch.indices),), generator=gen)
            sub = term.novel_geometry.select(idx).to(outputs.device)
            out["relevancy_novel"] = term.loss(self.field.render(sub), term.novel_labels[idx])
            out["loss"] = out["loss"] + out["relevancy_novel"]
        return out

    def optimizers(self, max_steps: int) -> Tuple[List[torch.optim.Optimizer], List[Any]]:
        return decaying_adam(self.field.param_groups(self.lr), self.lr, max_steps, betas=(0.9, 0.99), eps=1e-15)
