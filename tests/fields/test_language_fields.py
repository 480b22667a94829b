"""Language fields: top-K ray weights, the NGP feature head render, Gaussian codes and the autoencoder."""

from __future__ import annotations

import pytest
import torch

from langfield.fields.semantic import FeatureAutoencoder, HashFeatureField, HashFeatureFieldConfig
from langfield.fields.language_fields import GaussianLanguageField, NGPLanguageField, RayWeights, SplatView, top_k_ray_weights
from langfield.ops.hash_encoding import HashGridConfig
from langfield.ops.splatting.projection import Projection
from langfield.ops.volume_rendering import accumulate_along_rays

SMALL = HashFeatureFieldConfig(
    hash_grid=HashGridConfig(num_levels=2, features_per_level=2, log2_hashmap_size=8, base_resolution=4, max_resolution=8),
    hidden_dim=8,
    num_hidden=1,
)
AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def _packed(num_rays=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([3, 0, 12, 1, 7])[:num_rays]
    ray_indices = torch.repeat_interleave(torch.arange(num_rays), counts)
    weights = torch.rand(len(ray_indices), generator=g) / 12
    positions = torch.rand(len(ray_indices), 3, generator=g) * 2 - 1
    perm = torch.randperm(len(ray_indices), generator=g)  # any order is accepted
    return positions[perm], weights[perm], ray_indices[perm], counts


def test_top_k_matches_brute_force():
    pos, w, ridx, counts = _packed()
    k = 4
    rw = top_k_ray_weights(pos, w, ridx, len(counts), k)
    assert rw.positions.shape == (5, k, 3) and rw.weights.shape == (5, k)
    for r in range(len(counts)):
        sel = ridx == r
        acc = w[sel].sum()
        assert rw.accumulation[r].item() == pytest.approx(float(acc), abs=1e-6)
        top = torch.sort(w[sel], descending=True).values[:k]
        n = len(top)
        if n:
            expect = top * acc / top.sum()
            assert torch.allclose(rw.weights[r, :n], expect, atol=1e-6)
            # positions follow their weights
            for j in range(n):
                src = (w == top[j]) & sel
                assert torch.allclose(rw.positions[r, j], pos[src][0])
        assert rw.weights[r, n:].eq(0).all()
        assert rw.weights[r].sum().item() == pytest.approx(float(acc), abs=1e-6)


def test_top_k_bad_k():
    pos, w, ridx, counts = _packed()
    with pytest.raises(ValueError, match="k must be"):
        top_k_ray_weights(pos, w, ridx, len(counts), 0)


def test_ngp_language_render_matches_reference_accumulation_and_gradients():
    torch.manual_seed(0)
    pos, w, ridx, counts = _packed()
    field = NGPLanguageField(AABB, 6, SMALL).double()
    with torch.no_grad():
        field.background.copy_(torch.randn(6, dtype=torch.float64))
    k = 16  # keeps every sample: identical to compositing all of them
    rw = top_k_ray_weights(pos.double(), w.double(), ridx, len(counts), k)
    out = field.render(rw)
    order = torch.argsort(ridx, stable=True)  # the packed reference wants contiguous rays
    feats = field.field(pos.double()[order])
    ref = accumulate_along_rays(w.double()[order], feats, ray_indices=ridx[order], num_rays=len(counts))
    acc = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, ridx, w.double())
    ref = ref + (1 - acc)[:, None] * field.background
    assert torch.allclose(out, ref, atol=1e-10)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), [field.background, field.field.encoding.embeddings])
    grads_ref = torch.autograd.grad((ref * g).sum(), [field.background, field.field.encoding.embeddings])
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-10)


def test_ngp_language_render_gradcheck():
    pos, w, ridx, counts = _packed()
    rw = top_k_ray_weights(pos.double(), w.double(), ridx, len(counts), 4)
    field = NGPLanguageField(AABB, 3, SMALL).double()
    bg = field.background.detach().clone().requires_grad_(True)
    torch.autograd.gradcheck(lambda b: NGPLanguageField.render(_with_bg(field, b), rw), (bg,))


def _with_bg(field, bg):
    clone = NGPLanguageField.__new__(NGPLanguageField)
    torch.nn.Module.__init__(clone)
    clone.embedding_dim = field.embedding_dim
    clone.field = field.field
    clone.background = bg
    clone.autoencoder = None
    return clone


def test_hash_feature_field_clamps_outside_points():
    f = HashFeatureField(AABB, 4, SMALL)
    inside = torch.tensor([[1.0, 1.0, 1.0]])
    outside = torch.tensor([[5.0, 3.0, 1.5]])
    assert torch.allclose(f(inside), f(outside))
    with pytest.raises(ValueError, match="embedding_dim"):
        HashFeatureField(AABB, 0, SMALL)


def test_autoencoder_learns_a_small_set_of_embeddings():
    torch.manual_seed(0)
    ae = FeatureAutoencoder(16, 3, hidden=(32, 16))
    targets = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    first = None
    for _ in range(300):
        loss, codes = ae.loss(targets)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert codes.shape == (5, 3)
    rec = ae.decode(ae.encode(targets))
    assert torch.allclose(rec.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert (rec * targets).sum(-1).min() > 0.95
    assert float(loss.detach()) < 0.2 * first


def _gap_features(n_labels=6, dim=32, n=400, gap_cos=0.1, seed=0):
    """CLIP-like image features: ``normalize(c * m + sqrt(1 - c^2) * u)`` with ``m`` a unit blend of
    two labels (dominant weight 0.55..1) and ``u`` one direction orthogonal to every label, shared by
    all features (the modality gap). Returns ``(features [n, dim], text [L, dim], dominant label [n])``."""
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(n_labels, dim, generator=g), dim=-1)
    q, _ = torch.linalg.qr(text.T)
    u = torch.randn(dim, generator=g)
    u = torch.nn.functional.normalize(u - q @ (q.T @ u), dim=-1)
    a, b = torch.randint(0, n_labels, (2, n), generator=g)
    w = 0.55 + 0.45 * torch.rand(n, 1, generator=g)
    mix = torch.nn.functional.normalize(w * text[a] + (1 - w) * text[b], dim=-1)
    feats = torch.nn.functional.normalize(gap_cos * mix + (1 - gap_cos**2) ** 0.5 * u, dim=-1)
    return feats, text, (feats @ text.T).argmax(-1)


def _fit(ae, feats, steps=250, lr=1e-2):
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    for _ in range(steps):
        loss, _ = ae.loss(feats)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_autoencoder_standardize_sets_mean_and_rms_spread_and_refuses_bad_input():
    ae = FeatureAutoencoder(4, 2, hidden=(8,))
    assert not ae.standardized and torch.equal(ae.center, torch.zeros(4)) and float(ae.scale) == 1.0
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    ae.standardize(x)
    assert torch.allclose(ae.center, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))
    assert float(ae.scale) == pytest.approx((2 / 3) ** 0.5)  # each row is sqrt(2/3) from the mean
    assert ae.standardized
    ae.standardize(x, chunk=2)  # chunked sums give the same statistics
    assert float(ae.scale) == pytest.approx((2 / 3) ** 0.5)
    with pytest.raises(ValueError, match="features"):
        ae.standardize(torch.ones(3, 5))
    with pytest.raises(ValueError, match="not all equal"):
        ae.standardize(torch.ones(3, 4))
    with pytest.raises(ValueError, match="finite"):
        ae.standardize(torch.tensor([[float("nan"), 0, 0, 0], [0.0, 1, 0, 0]]))


def test_autoencoder_default_buffers_are_the_plain_autoencoder():
    torch.manual_seed(0)
    ae = FeatureAutoencoder(8, 3, hidden=(16,))
    f = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    codes = ae.encoder(f)
    assert torch.equal(ae.encode(f), codes)
    rec = torch.nn.functional.normalize(ae.decoder(codes), dim=-1)
    assert torch.equal(ae.decode(codes), rec)
    loss, _ = ae.loss(f)
    assert float(loss.detach()) == pytest.approx(float((rec - f).abs().sum(-1).mean() + (1 - (rec * f).sum(-1)).mean()))


def test_standardized_autoencoder_keeps_labels_through_a_modality_gap():
    """With a shared gap direction the plain 3-d autoencoder loses which label a feature carries;
    the standardised one keeps it (same architecture, steps and learning rate)."""
    feats, text, ids = _gap_features()

    def label_accuracy(ae):
        with torch.no_grad():
            rec = ae.decode(ae.encode(feats))
        return float(((rec @ text.T).argmax(-1) == ids).float().mean())

    torch.manual_seed(0)
    plain = FeatureAutoencoder(32, 3, hidden=(32, 16))
    _fit(plain, feats)
    torch.manual_seed(0)
    std = FeatureAutoencoder(32, 3, hidden=(32, 16))
    std.standardize(feats)
    _fit(std, feats)
    acc_plain, acc_std = label_accuracy(plain), label_accuracy(std)
    assert acc_std >= 0.98, acc_std  # measured 1.0 (seeds 0-2)
    assert acc_std > acc_plain + 0.2, (acc_plain, acc_std)  # plain measured 0.55-0.68 (seeds 0-2)
    rec = std.decode(std.encode(feats))
    assert torch.allclose(rec.norm(dim=-1), torch.ones(len(feats)), atol=1e-5)


def _tiny_view(n=3, w=6, h=5):
    means2d = torch.tensor([[1.5, 1.5], [4.0, 2.5], [2.5, 3.5]])[:n]
    conics = torch.tensor([[0.5, 0.0, 0.5]]).expand(n, 3).clone()
    proj = Projection(means2d, conics, torch.tensor([1.0, 2.0, 3.0])[:n], torch.full((n,), 4, dtype=torch.int32), torch.ones(n))
    return SplatView(proj, torch.tensor([0.8, 0.6, 0.9])[:n], w, h)


def test_gaussian_language_field_renders_codes_with_background():
    from langfield.ops.reference.splatting import rasterize_gaussians_reference

    field = GaussianLanguageField(3, 8, latent_dim=2, hidden=(8,), backend="torch")
    with torch.no_grad():
        field.codes.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
        field.background_code.copy_(torch.tensor([0.2, -0.3]))
    view = _tiny_view()
    img = field.render_codes(view)
    p = view.projection
    ref, _ = rasterize_gaussians_reference(
        p.means2d, p.conics, view.opacities, field.codes.detach(), p.radii, view.width, view.height,
        background=field.background_code.detach(), depths=p.depths,
    )
    assert img.shape == (5, 6, 2)
    assert torch.allclose(img, ref, atol=1e-5)
    img.sum().backward()
    assert field.codes.grad is not None and field.codes.grad.abs().sum() > 0
    decoded = field.render(view)
    assert decoded.shape == (5, 6, 8)
    assert torch.allclose(decoded.norm(dim=-1), torch.ones(5, 6), atol=1e-5)
    assert field.gaussian_features().shape == (3, 8)


def test_autoencoder_decodes_in_blocks_exactly_as_one_pass(monkeypatch):
    import langfield.fields.semantic as semantic

    torch.manual_seed(0)
    ae = FeatureAutoencoder(8, 2, hidden=(8,))
    with torch.no_grad():
        ae.standardize(torch.nn.functional.normalize(torch.randn(50, 8), dim=-1))
    codes = torch.randn(5, 6, 2, requires_grad=True)
    whole = ae.decode(codes)  # 30 codes <= the default block: one pass
    (g_whole,) = torch.autograd.grad(whole.square().mul(torch.arange(8.0)).sum(), codes)
    monkeypatch.setattr(semantic, "DECODE_BLOCK", 7)  # four full blocks and a partial one
    blocked = ae.decode(codes)
    (g_blocked,) = torch.autograd.grad(blocked.square().mul(torch.arange(8.0)).sum(), codes)
    assert blocked.shape == (5, 6, 8)
    assert torch.allclose(blocked, whole, atol=1e-6) and torch.allclose(g_blocked, g_whole, atol=1e-6)
    assert torch.allclose(blocked.norm(dim=-1), torch.ones(5, 6), atol=1e-5)
    assert ae.decode(torch.zeros(0, 2)).shape == (0, 8)


def test_view_features_of_gaussians_are_the_decoded_unit_render():
    from langfield.language.view_geometry import render_view_features

    torch.manual_seed(0)
    field = GaussianLanguageField(3, 8, latent_dim=2, hidden=(8,), backend="torch")
    with torch.no_grad():
        field.codes.copy_(torch.randn(3, 2))
        feats = render_view_features(field, _tiny_view(), 5, 6)
        ref = torch.nn.functional.normalize(field.render(_tiny_view()), dim=-1)
    assert feats.shape == (5, 6, 8) and feats.device.type == "cpu"
    assert torch.allclose(feats, ref, atol=1e-6)


def test_gaussian_language_field_size_mismatch():
    field = GaussianLanguageField(4, 8, latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="Gaussians"):
        field.render_codes(_tiny_view())


def test_latent_ngp_head_composites_codes_then_decodes():
    torch.manual_seed(0)
    pos, w, ridx, counts = _packed()
    field = NGPLanguageField(AABB, 12, SMALL, latent_dim=3, hidden=(8,))
    rw = top_k_ray_weights(pos, w, ridx, len(counts), 16)
    codes = field.render_codes(rw)
    assert codes.shape == (5, 3)
    assert torch.allclose(field.render(rw), field.autoencoder.decode(codes))
    assert field.point_features(pos).shape == (len(pos), 12)


def test_fields_saved_before_standardisation_load_as_plain_autoencoders():
    from langfield.language.distillation import _load_field_weights

    torch.manual_seed(0)
    old = GaussianLanguageField(4, 8, 3)
    stored = {k: v for k, v in old.state_dict().items() if not k.endswith(("autoencoder.center", "autoencoder.scale"))}
    assert len(stored) == len(old.state_dict()) - 2
    new = GaussianLanguageField(4, 8, 3)
    new.autoencoder.standardize(torch.randn(10, 8))  # whatever it held is replaced by the plain defaults
    _load_field_weights(new, stored, "old.pt")
    assert not new.autoencoder.standardized
    assert torch.equal(new.gaussian_features(), old.gaussian_features())
    bare = FeatureAutoencoder(8, 3)  # the autoencoder alone, through torch's own loader
    bare.standardize(torch.randn(10, 8))
    bare.load_state_dict({k.removeprefix("autoencoder."): v for k, v in stored.items() if k.startswith("autoencoder.")})
    assert not bare.standardized
