"""The blend test that picks the Gaussian codes' width (langfield.language.latent_width)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from langfield.fields.semantic import FeatureAutoencoder
from langfield.language.latent_width import BLEND_WEIGHTS, choose_width, label_centroids, unfaithful_blend_share


class _LineAutoencoder(nn.Module):
    """A 1-d "autoencoder" over three orthogonal labels: label 0 at z = 0, label 2 at z = 1, label 1 at
    z = 2, decoded to the nearest label's axis. The code segment from label 0 to label 1 crosses label 2."""

    def __init__(self):
        super().__init__()
        self.register_buffer("center", torch.zeros(3))

    def encode(self, f):
        return (f @ torch.tensor([0.0, 2.0, 1.0]))[:, None]

    def decode(self, z):
        z = z[..., 0]
        idx = torch.where(z < 0.5, 0, torch.where(z < 1.5, 2, 1))
        return torch.eye(3)[idx]


class _ConstantAutoencoder(_LineAutoencoder):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def decode(self, z):
        return self.out.expand(*z.shape[:-1], -1)


def test_centroids_are_the_normalised_means_of_each_labels_pixels():
    text = torch.eye(3)
    f = torch.tensor([[2.0, 0.1, 0.0], [1.0, -0.1, 0.0], [0.0, 3.0, 0.0], [0.0, 1.0, 0.2]])
    labels, cents = label_centroids(f.half(), text, min_share=0.0)
    assert labels.tolist() == [0, 1]  # nobody is called label 2
    want0 = F.normalize(F.normalize(f[0], dim=0) + F.normalize(f[1], dim=0), dim=0)
    assert torch.allclose(cents[0], want0, atol=2e-3) and torch.allclose(cents.norm(dim=1), torch.ones(2))
    # A label below the share is left out; chunks do not change the sums.
    many = torch.cat([f, torch.tensor([[0.0, 0.0, 1.0]]), f.repeat(50, 1)])
    labels, _ = label_centroids(many, text, min_share=0.01, chunk=7)
    assert labels.tolist() == [0, 1]
    labels, _ = label_centroids(many, text, min_share=0.001, chunk=7)
    assert labels.tolist() == [0, 1, 2]


def test_blends_decoded_as_a_third_label_are_counted_exactly():
    text = torch.eye(3)
    labels = torch.tensor([0, 1, 2])
    # Pair (0, 1): z = 2 - 2w is in [0.5, 1.5) for w = 0.3 .. 0.7 -> five blends read as label 2.
    # Pairs (0, 2) and (1, 2) only ever decode as one of their own labels.
    share = unfaithful_blend_share(_LineAutoencoder(), labels, torch.eye(3), text)
    assert share == pytest.approx(5 / (3 * len(BLEND_WEIGHTS)))


def test_a_third_label_the_feature_blend_reads_too_is_not_the_autoencoders_fault():
    # Label 2's text sits between labels 0 and 1: the feature blend itself reads as 2 for
    # w in (0.293, 0.707), i.e. w = 0.3 .. 0.7. A decoder that always says 2 is blamed for the other 4.
    text = torch.stack([torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), F.normalize(torch.tensor([1.0, 1, 0]), dim=0)])
    ae = _ConstantAutoencoder(text[2])
    share = unfaithful_blend_share(ae, torch.tensor([0, 1]), torch.eye(3)[:2], text)
    assert share == pytest.approx(4 / 9)
    # A faithful (identity) code space is never blamed.
    identity = _ConstantAutoencoder(None)
    identity.encode = lambda f: f
    identity.decode = lambda z: F.normalize(z, dim=-1)
    assert unfaithful_blend_share(identity, torch.tensor([0, 1]), torch.eye(3)[:2], text) == 0.0
    assert unfaithful_blend_share(identity, torch.tensor([0]), torch.eye(3)[:1], text) == 0.0  # one label: no pairs


def test_a_real_autoencoder_runs_through_the_test():
    torch.manual_seed(0)
    ae = FeatureAutoencoder(8, 2, hidden=(16,))
    text = F.normalize(torch.randn(4, 8), dim=-1)
    share = unfaithful_blend_share(ae, torch.arange(4), text, text)
    assert 0.0 <= share <= 1.0 and (share * 6 * len(BLEND_WEIGHTS)) == pytest.approx(round(share * 6 * len(BLEND_WEIGHTS)))


def test_choose_width_takes_the_narrowest_that_passes_else_the_least_unfaithful():
    assert choose_width({3: 0.2, 5: 0.04, 8: 0.0}, 0.05) == 5
    assert choose_width({3: 0.01, 5: 0.0}, 0.05) == 3
    assert choose_width({8: 0.3, 3: 0.2, 5: 0.2}, 0.05) == 3  # a tie goes to the narrower width
    with pytest.raises(ValueError, match="no candidate"):
        choose_width({}, 0.05)
