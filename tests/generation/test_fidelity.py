"""The per-pixel fidelity instruments: PixelNet shapes, known fidelity values, a short training that learns."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.data.samplers import IndexSampler
from langfield.generation.fidelity import PixelNet, depth_fidelity, predict_depth, predict_labels, segmentation_fidelity
from langfield.methods.diffusion import PixelInstrumentObjective
from langfield.training.trainer import Trainer, TrainerConfig


def _constant_net(out_channels: int, bias) -> PixelNet:
    net = PixelNet(out_channels, width=4)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return net


def test_shapes_and_input_checks():
    net = PixelNet(6, width=4)
    x = torch.rand(2, 3, 12, 16)
    assert net(x).shape == (2, 6, 12, 16)
    assert predict_labels(net, (x * 255).to(torch.uint8)).shape == (2, 12, 16)
    with pytest.raises(InputError, match="images"):
        net_in = torch.rand(2, 1, 12, 16)
        predict_labels(net, net_in)
    with pytest.raises(InputError, match="multiples of 4"):
        predict_labels(net, torch.rand(1, 3, 10, 16))
    with pytest.raises(InputError, match="regressor"):
        predict_depth(net, x)


def test_known_fidelity_values_of_constant_predictions():
    images = torch.rand(2, 3, 8, 8)
    depth_net = _constant_net(1, [math.log(2.0)])  # predicts depth 2 everywhere
    assert torch.allclose(predict_depth(depth_net, images), torch.full((2, 8, 8), 2.0))
    assert depth_fidelity(depth_net, images, torch.full((2, 8, 8), 2.0)) == pytest.approx(1.0)
    assert depth_fidelity(depth_net, images, torch.full((2, 8, 8), 4.0)) == pytest.approx(0.5)
    seg_net = _constant_net(3, [0.0, 5.0, 0.0])  # class 1 everywhere
    labels = torch.ones(2, 8, 8, dtype=torch.long)
    labels[:, :4] = 0  # half the pixels class 0: IoU(1) = 0.5, IoU(0) = 0
    assert segmentation_fidelity(seg_net, images, labels) == pytest.approx(0.25)
    with pytest.raises(InputError, match="labels"):
        segmentation_fidelity(seg_net, images, labels[:1])
    # the mean over chosen classes only: class 1 alone 0.5, class 0 alone 0.0; a class absent everywhere: nan
    assert segmentation_fidelity(seg_net, images, labels, classes=[1]) == pytest.approx(0.5)
    assert segmentation_fidelity(seg_net, images, labels, classes=[0]) == 0.0
    assert math.isnan(segmentation_fidelity(seg_net, images, labels, classes=[2]))
    assert segmentation_fidelity(seg_net, images, labels, classes=[0, 1, 2]) == pytest.approx(0.25)
    with pytest.raises(InputError, match="classes"):
        segmentation_fidelity(seg_net, images, labels, classes=[3])
    with pytest.raises(InputError, match="classes"):
        segmentation_fidelity(seg_net, images, labels, classes=[])


def _two_colour_task(n: int = 32, size: int = 8):
    """Left/right halves in red or blue at a random split column; the label is the colour."""
    gen = torch.Generator().manual_seed(0)
    cols = torch.randint(2, size - 2, (n,), generator=gen)
    labels = (torch.arange(size)[None, None, :] >= cols[:, None, None]).expand(n, size, size).long()
    flip = torch.rand(n, generator=gen) < 0.5
    labels = torch.where(flip[:, None, None], 1 - labels, labels)
    images = torch.stack([labels == 0, torch.zeros_like(labels, dtype=torch.bool), labels == 1], 1).float()
    return (images * 255).to(torch.uint8), labels


def test_segmenter_learns_a_pixel_task_far_above_the_blind_floor():
    torch.manual_seed(0)
    images, labels = _two_colour_task()
    net = PixelNet(2, width=4)
    objective = PixelInstrumentObjective(net, images, labels, task="segmentation", lr=1e-2)
    Trainer(objective, TrainerConfig(max_steps=40, output_dir=None, progress=False, seed=0),
            sampler=IndexSampler(len(images), 16, seed=0)).train()  # fmt: skip
    assert segmentation_fidelity(net, images, labels) > 0.9  # the blind majority map scores ~0.33


def test_objective_refuses_bad_targets():
    images, labels = _two_colour_task(4)
    with pytest.raises(InputError, match="class ids"):
        PixelInstrumentObjective(PixelNet(2, width=4), images, labels + 1, task="segmentation")
    with pytest.raises(InputError, match="depth targets"):
        PixelInstrumentObjective(PixelNet(1, width=4), images, -labels.float() - 1, task="depth")
    with pytest.raises(InputError, match="task"):
        PixelInstrumentObjective(PixelNet(1, width=4), images, labels.float(), task="normals")
    with pytest.raises(InputError, match="targets"):
        PixelInstrumentObjective(PixelNet(2, width=4), images, labels[:2], task="segmentation")
