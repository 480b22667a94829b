"""The per-pixel fidelity instruments: PixelNet shapes, known fidelity values, a short training that learns."""

from __future__ import annotations

import math

import pytest
import torch

from langfield._checks import InputError
from langfield.data.samplers import IndexSampler
from langfield.generation.fidelity import PixelNet, depth_fidelity, predict_depth, predict_labels, segmentation_fidelity
from langfield.methods.diffusion import PixelInstrumentObjective
from langfield.methods.diffusion.pixel_instrument import blur_each
from langfield.training.trainer import Trainer, TrainerConfig
from langfield.types import IndexBatch


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


def _blur_reference(images, sigmas):
    """Slow twin of blur_each: every output pixel a weighted sum over a clamped (replicate) window."""
    b, c, h, w = images.shape
    out = torch.zeros_like(images)
    for i in range(b):
        s = float(sigmas[i])
        half = int(math.ceil(3.0 * float(sigmas.max())))
        for y in range(h):
            for x in range(w):
                acc, total = torch.zeros(c, dtype=images.dtype), 0.0
                for dy in range(-half, half + 1):
                    for dx in range(-half, half + 1):
                        wgt = math.exp(-0.5 * (dy * dy + dx * dx) / max(s, 1e-3) ** 2)
                        acc = acc + wgt * images[i, :, min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)]
                        total += wgt
                out[i, :, y, x] = acc / total
    return out


def test_blur_each_matches_its_slow_twin_in_values_and_gradients():
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(3, 2, 6, 5, generator=gen, dtype=torch.float64)
    sigmas = torch.tensor([0.0, 0.7, 1.3], dtype=torch.float64)
    out = blur_each(images, sigmas)
    torch.testing.assert_close(out, _blur_reference(images, sigmas), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[0], images[0])  # sigma 0: unchanged
    assert not torch.allclose(out[2], images[2], atol=1e-2)  # a real blur
    torch.testing.assert_close(blur_each(torch.full((2, 3, 5, 5), 0.4), torch.tensor([1.0, 2.0])), torch.full((2, 3, 5, 5), 0.4))
    small = images[:2, :, :4, :4].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: blur_each(x, sigmas[1:]), (small,))
    with pytest.raises(InputError, match="sigmas"):
        blur_each(images, torch.tensor([1.0]))
    with pytest.raises(InputError, match="sigmas"):
        blur_each(images, torch.tensor([1.0, -1.0, 0.0]))


def test_blur_augmentation_is_drawn_from_the_batch_seed():
    images, labels = _two_colour_task(8)
    sharp = PixelInstrumentObjective(PixelNet(2, width=4), images, labels, task="segmentation", brightness=0.0)
    soft = PixelInstrumentObjective(PixelNet(2, width=4), images, labels, task="segmentation", brightness=0.0, blur=2.0)
    batch = IndexBatch(indices=torch.arange(8), step=0, seed=5)
    x_sharp, y = sharp._batch(batch)
    x_soft, y_soft = soft._batch(batch)
    torch.testing.assert_close(y, y_soft)  # targets untouched
    torch.testing.assert_close(x_sharp, images.float() / 255.0)
    assert not torch.allclose(x_soft, x_sharp, atol=1e-2)
    torch.testing.assert_close(soft._batch(batch)[0], x_soft)  # a pure function of the batch
    with pytest.raises(InputError, match="blur"):
        PixelInstrumentObjective(PixelNet(2, width=4), images, labels, task="segmentation", blur=-1.0)


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
