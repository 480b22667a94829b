"""Front-to-back evaluation in rounds: exactly the samples a full pass would keep, with the same
densities, while the samples behind opaque points are never evaluated."""

import pytest
import torch

from langfield.ops.early_termination import densities_front_to_back
from langfield.ops.volume_rendering import render_transmittance_from_density, render_weights_from_density


def _scene(num_rays=40, max_samples=800, seed=0):
    """Packed rays of random length through a fog with a few opaque slabs; some rays stay transparent."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_samples, (num_rays,), generator=g)
    counts[0] = 0
    ridx = torch.arange(num_rays).repeat_interleave(counts)
    n = len(ridx)
    steps = torch.rand(n, generator=g) * 0.02 + 0.005
    starts = torch.zeros(num_rays, dtype=torch.long)
    starts[1:] = torch.cumsum(counts, 0)[:-1]
    edges = torch.cumsum(steps, 0)
    offset = (edges - steps)[starts][ridx]
    t1 = edges - offset
    t0 = t1 - steps
    sigmas = torch.rand(n, generator=g) * 2.0
    slab = torch.rand(num_rays, generator=g) < 0.7
    opaque = (t0 > 1.0) & (t0 < 1.3) & slab[ridx]
    sigmas = torch.where(opaque, torch.full_like(sigmas, 80.0), sigmas)
    feats = torch.randn(n, 4, generator=g)
    return t0, t1, ridx, num_rays, sigmas, feats


@pytest.mark.parametrize("first_round", [1, 7, 32])
def test_rounds_keep_exactly_what_a_full_pass_keeps(first_round):
    t0, t1, ridx, r, sigmas, feats = _scene()
    calls = []

    def fn(index):
        calls.append(index)
        return sigmas[index], feats[index]

    sig, f, evaluated = densities_front_to_back(t0, t1, ridx, r, fn, eps=1e-4, first_round=first_round)
    trans_full, _ = render_transmittance_from_density(t0, t1, sigmas, ridx, r)
    keep_full = trans_full > 1e-4
    trans, _ = render_transmittance_from_density(t0, t1, sig, ridx, r)
    keep = trans > 1e-4
    assert torch.equal(keep, keep_full)
    assert torch.equal(sig[keep], sigmas[keep]) and torch.equal(f[keep], feats[keep])
    assert bool(evaluated[keep].all())
    assert bool((sig[~evaluated] == 0).all()) and bool((f[~evaluated] == 0).all())
    # the weights of the kept samples are the full pass's
    w_full, _, _ = render_weights_from_density(t0, t1, sigmas, ridx, r)
    w, _, _ = render_weights_from_density(t0, t1, sig, ridx, r)
    assert torch.allclose(w[keep], w_full[keep], atol=1e-7)
    # opaque slabs end rays early: most samples behind them are never evaluated
    assert int(evaluated.sum()) < 0.6 * len(t0)
    assert int((~keep_full & evaluated).sum()) < len(t0) // 4
    # every round asks for sorted, distinct, not yet evaluated indices
    seen = torch.cat(calls)
    assert len(seen) == len(torch.unique(seen)) == int(evaluated.sum())
    assert all(bool((c[1:] > c[:-1]).all()) for c in calls if len(c) > 1)


def test_transparent_rays_evaluate_everything_and_without_features():
    t0, t1, ridx, r, sigmas, _ = _scene(seed=1)
    low = sigmas * 1e-3
    sig, f, evaluated = densities_front_to_back(t0, t1, ridx, r, lambda i: (low[i], None))
    assert f is None and bool(evaluated.all()) and torch.equal(sig, low)


def test_empty_input_and_bad_arguments():
    e = torch.zeros(0)
    sig, f, ev = densities_front_to_back(e, e, torch.zeros(0, dtype=torch.long), 3, lambda i: (e[i], torch.zeros(len(i), 2)))
    assert sig.shape == (0,) and f.shape == (0, 2) and ev.shape == (0,)
    t0, t1, ridx, r, sigmas, _ = _scene(num_rays=3, max_samples=5)
    with pytest.raises(ValueError, match="eps"):
        densities_front_to_back(t0, t1, ridx, r, lambda i: (sigmas[i], None), eps=0.0)
    with pytest.raises(ValueError, match="first_round"):
        densities_front_to_back(t0, t1, ridx, r, lambda i: (sigmas[i], None), first_round=0)
