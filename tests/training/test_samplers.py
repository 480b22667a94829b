import math

import pytest
import torch

from langfield.data.dataset import ImageSet
from langfield.data.samplers import PixelSampler, stream_seed
from langfield.geometry.rays import rays_from_pixels
from langfield.types import Cameras

from .toy_method import make_toy_dataset, torch_test_state  # noqa: F401


def coded_image_set(num_cams=3, height=5, width=7, alpha=None):
    """Pixel (c, v, u) has colour (10 u, 10 v, 50 c) so the batch reveals where each ray came from."""
    c, v, u = torch.meshgrid(torch.arange(num_cams), torch.arange(height), torch.arange(width), indexing="ij")
    images = torch.stack([10 * u, 10 * v, 50 * c], dim=-1).to(torch.uint8)
    poses = torch.eye(4).repeat(num_cams, 1, 1)
    poses[:, 0, 3] = torch.arange(num_cams, dtype=torch.float32)
    K = torch.tensor([[4.0, 0.0, 3.5], [0.0, 5.0, 2.5], [0.0, 0.0, 1.0]])
    cams = Cameras.create(poses, K, width, height)
    return ImageSet(cameras=cams, images=images, alphas=alpha)


def decode(rgb):
    q = (rgb * 255).round().long()
    return q[:, 2] // 50, q[:, 1] // 10, q[:, 0] // 10  # cam, v, u


def test_batch_pixels_and_rays_match_pixel_centres():
    image_set = coded_image_set()
    sampler = PixelSampler(image_set, num_rays=500, near=0.5, far=4.0, seed=3)
    batch = sampler.sample(0)
    assert batch.rgb.shape == (500, 3) and batch.rgb.dtype == torch.float32
    assert batch.background.shape == (500, 3)
    cam, v, u = decode(batch.rgb)
    assert torch.equal(cam, batch.rays.camera_indices)
    # every camera / row / column is hit with 500 draws over 105 pixels
    assert set(cam.tolist()) == {0, 1, 2} and set(v.tolist()) == set(range(5)) and set(u.tolist()) == set(range(7))
    pixels = torch.stack([u, v], -1).float() + 0.5
    expected = rays_from_pixels(image_set.cameras, cam, pixels, 0.5, 4.0)
    for name in ("origins", "directions", "radii", "near", "far"):
        assert torch.allclose(getattr(batch.rays, name), getattr(expected, name)), name
    assert torch.all(batch.rays.near == 0.5) and torch.all(batch.rays.far == 4.0)
    assert sampler._rgb.dtype == torch.uint8  # images kept compact


@pytest.mark.parametrize("background", ["white", "black", "random"])
def test_rgba_is_composited_over_background(background):
    image_set = coded_image_set()
    alpha = torch.full((3, 5, 7, 1), 51, dtype=torch.uint8)  # alpha = 0.2 everywhere
    image_set = ImageSet(image_set.cameras, image_set.images, alphas=alpha)
    opaque = PixelSampler(coded_image_set(), num_rays=256, near=0.5, far=4.0, seed=1, background=background)
    sampler = PixelSampler(image_set, num_rays=256, near=0.5, far=4.0, seed=1, background=background)
    batch, ref = sampler.sample(0), opaque.sample(0)
    assert torch.equal(batch.background, ref.background)
    bg = batch.background
    if background == "random":
        assert bg.min() >= 0 and bg.max() < 1 and bg.std() > 0.2  # one colour per ray
        assert len({tuple(row) for row in bg.tolist()}) == 256
    else:
        assert torch.all(bg == (1.0 if background == "white" else 0.0))
    assert torch.allclose(batch.rgb, 0.2 * ref.rgb + 0.8 * bg, atol=1e-6)


def test_stream_is_a_pure_function_of_seed_and_step():
    image_set = coded_image_set()
    a = PixelSampler(image_set, num_rays=64, near=0.5, far=4.0, seed=5, background="random")
    b = PixelSampler(image_set, num_rays=64, near=0.5, far=4.0, seed=5, background="random")
    first = [a.sample(step) for step in range(3)]
    b.load_state_dict({"step": 2})  # an old checkpoint's step entry is ignored: the trainer owns the step
    assert torch.equal(b.sample(2).rgb, first[2].rgb)
    assert torch.equal(a.sample(1).rays.directions, first[1].rays.directions)
    assert not torch.equal(first[0].rgb, first[1].rgb)
    c = PixelSampler(image_set, num_rays=64, near=0.5, far=4.0, seed=6, background="random")
    assert not torch.equal(c.sample(0).rgb, first[0].rgb)
    assert a.state_dict() == {"seed": 5, "num_rays": 64, "num_streams": 1}
    a.set_num_rays(37)  # the adaptive batch is what the state carries beyond the step
    b.load_state_dict(a.state_dict())
    assert b.num_rays == 37 and torch.equal(b.sample(4).rgb, a.sample(4).rgb)


def test_ranks_draw_disjoint_streams_whose_concatenation_is_the_single_process_batch():
    image_set = make_toy_dataset().split("train")
    kw = dict(num_rays=96, near=1.0, far=5.0, seed=0, background="random")
    single = PixelSampler(image_set, num_streams=2, **kw)
    ranks = [PixelSampler(image_set, rank=r, world_size=2, **kw) for r in range(2)]
    assert [s.num_local_rays for s in ranks] == [48, 48] and single.num_local_rays == 96
    for step in range(3):
        whole = single.sample(step)
        parts = [s.sample(step) for s in ranks]
        assert not torch.equal(parts[0].rgb, parts[1].rgb)
        assert torch.equal(torch.cat([p.rgb for p in parts]), whole.rgb)
        assert torch.equal(torch.cat([p.background for p in parts]), whole.background)
        assert torch.equal(torch.cat([p.rays.origins for p in parts]), whole.rays.origins)
        assert torch.equal(torch.cat([p.rays.camera_indices for p in parts]), whole.rays.camera_indices)
    # 4 streams over 2 ranks: rank 1 takes streams 2 and 3
    four = PixelSampler(image_set, num_streams=4, rank=1, world_size=2, **kw)
    assert four.streams == [2, 3]
    assert torch.equal(four.sample(0).rgb, PixelSampler(image_set, num_streams=4, **kw).sample(0).rgb[48:])


def test_stream_seed_mixes_all_inputs():
    seeds = {stream_seed(0, s, k) for s in range(20) for k in range(4)} | {stream_seed(1, 0, 0)}
    assert len(seeds) == 81
    with pytest.raises(ValueError, match="step"):
        stream_seed(0, -1, 0)


def test_bad_input():
    image_set = coded_image_set()
    kw = dict(num_rays=64, near=0.5, far=4.0)
    with pytest.raises(ValueError, match="background"):
        PixelSampler(image_set, background="green", **kw)
    with pytest.raises(ValueError, match="divisible"):
        PixelSampler(image_set, num_rays=63, near=0.5, far=4.0, world_size=2, rank=0)
    with pytest.raises(ValueError, match="rank"):
        PixelSampler(image_set, rank=2, world_size=2, **kw)
    with pytest.raises(ValueError, match="multiple of world_size"):
        PixelSampler(image_set, num_streams=3, world_size=2, **kw)
    with pytest.raises(ValueError, match="far > near"):
        PixelSampler(image_set, num_rays=64, near=2.0, far=1.0)
    float_set = ImageSet(image_set.cameras, image_set.images.float())
    with pytest.raises(ValueError, match="uint8"):
        PixelSampler(float_set, **kw)
    bad_alpha = ImageSet(image_set.cameras, image_set.images, alphas=torch.zeros(3, 5, 7, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="alphas"):
        PixelSampler(bad_alpha, **kw)
    with pytest.warns(UserWarning, match="seed"):
        PixelSampler(image_set, **kw).load_state_dict({"step": 1, "seed": 99})


def test_image_sampler_visits_every_image_once_per_epoch_and_is_a_function_of_the_step(tiny_scene):
    from langfield.data.samplers import ImageSampler

    train = tiny_scene.split("train")
    a = ImageSampler(train, background="random", seed=3)
    epoch = [a.sample(step) for step in range(len(train))]
    assert sorted(b.index for b in epoch) == list(range(len(train)))
    assert [b.index for b in epoch] != list(range(len(train)))  # shuffled
    b = ImageSampler(train, background="random", seed=3)
    b.load_state_dict({"seed": 3})
    again = b.sample(5)
    assert again.index == epoch[5].index and torch.equal(again.rgb, epoch[5].rgb)
    assert torch.equal(again.background, epoch[5].background)
    assert again.rgb.shape == (16, 16, 3) and again.cameras.c2w.shape == (1, 3, 4)
    white = ImageSampler(train, background="white").sample(0)
    assert torch.equal(white.background, torch.ones(3))
    with pytest.raises(ValueError, match="background"):
        ImageSampler(train, background="green")


def test_camera_sampler_draws_cameras_in_range_looking_at_the_target():
    from langfield.data.samplers import CameraSampler, CameraSamplerConfig

    cfg = CameraSamplerConfig(width=8, height=6, radius=(2.0, 3.0), elevation_deg=(10.0, 30.0), fov_deg=(50.0, 50.0),
                              target=(0.5, 0.0, 0.0), num_cameras=64, background="random")  # fmt: skip
    sampler = CameraSampler(cfg, seed=4)
    batch = sampler.sample(7)
    cams = batch.cameras
    assert len(cams) == 64 and sampler.num_rays == 8 * 6 * 64
    centres = cams.c2w[:, :, 3]
    offsets = centres - torch.tensor([0.5, 0.0, 0.0])
    dist = offsets.norm(dim=-1)
    assert dist.min() >= 2.0 - 1e-5 and dist.max() <= 3.0 + 1e-5 and dist.std() > 0.1
    elev = torch.rad2deg(torch.asin(offsets[:, 2] / dist))
    assert elev.min() >= 10.0 - 1e-3 and elev.max() <= 30.0 + 1e-3
    # the optical axis (+z of the OpenCV c2w) points at the target
    assert torch.allclose(cams.c2w[:, :, 2], -offsets / dist[:, None], atol=1e-5)
    focal = 0.5 * 6 / math.tan(math.radians(25.0))
    assert torch.allclose(cams.Ks[:, 1, 1], torch.full((64,), focal), atol=1e-4)
    assert torch.equal(sampler.sample(7).cameras.c2w, cams.c2w)  # a pure function of the step
    assert not torch.equal(sampler.sample(8).cameras.c2w, cams.c2w)
    assert batch.background.shape == (3,)
    with pytest.raises(ValueError, match="elevation_deg"):
        CameraSamplerConfig(elevation_deg=(0.0, 90.0))
    with pytest.raises(ValueError, match="radius"):
        CameraSamplerConfig(radius=(3.0, 2.0))


def test_index_sampler_is_uniform_and_a_function_of_the_step():
    from langfield.data.samplers import IndexSampler

    sampler = IndexSampler(10, 5000, seed=2)
    batch = sampler.sample(3)
    counts = torch.bincount(batch.indices, minlength=10)
    assert batch.indices.min() >= 0 and batch.indices.max() < 10 and counts.min() > 400
    assert torch.equal(IndexSampler(10, 5000, seed=2).sample(3).indices, batch.indices)
    assert batch.seed != sampler.sample(4).seed and batch.step == 3
    with pytest.raises(ValueError, match="num_items"):
        IndexSampler(0, 4)
    with pytest.raises(ValueError, match="seed"):
        IndexSampler(3, 4, seed=-1)
