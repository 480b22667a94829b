"""Ray spaces at the dataset level: the LLFF reader's forward_facing flag, ray_space resolution, the
NDC space of a dataset, training and rendering rays through one conversion, depth back in world units,
and a short NeRF training in NDC on a forward-facing scene."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from langfield._checks import InputError
from langfield.data import load_dataset
from langfield.data.dataset import ImageSet, SceneDataset
from langfield.data.ray_space import apply_ray_space, looks_forward_facing, ndc_space_for
from langfield.data.samplers import PixelSampler, SamplerOptions
from langfield.geometry.rays import rays_from_camera
from langfield.geometry.rotations import look_at
from langfield.methods.base import RayMethod, SceneInfo
from langfield.methods.registry import make_method, uses_rays
from langfield.types import Cameras, RenderOutput
from tests.conftest import SHARED_DATA
from tests.data.readers.test_llff import write_llff

PLANE_Z = 4.0  # the synthetic scene: a textured plane z = PLANE_Z in front of the cameras


def plane_scene(num_views: int = 9, size: int = 16) -> SceneDataset:
    """A forward-facing capture of the textured plane ``z = PLANE_Z`` (cameras near the origin, looking along +z)."""
    eyes, targets = [], []
    for k in range(num_views):
        a = 2 * math.pi * k / num_views
        eyes.append([0.3 * math.cos(a), 0.2 * math.sin(a), 0.05 * math.sin(2 * a)])
        targets.append([0.1 * math.cos(a), 0.1 * math.sin(a), PLANE_Z])
    c2w = look_at(torch.tensor(eyes), torch.tensor(targets), torch.tensor([0.0, -1.0, 0.0]))
    K = torch.tensor([[1.2 * size, 0.0, size / 2], [0.0, 1.2 * size, size / 2], [0.0, 0.0, 1.0]])
    cams = Cameras.create(c2w, K, size, size)
    images = []
    for i in range(num_views):
        rays = rays_from_camera(cams, i, 0.0, 1.0)
        t = (PLANE_Z - rays.origins[..., 2]) / rays.directions[..., 2]
        p = rays.origins + t[..., None] * rays.directions
        x, y = p[..., 0], p[..., 1]
        rgb = torch.stack([0.5 + 0.4 * torch.sin(4 * x), 0.5 + 0.4 * torch.cos(5 * y), 0.5 + 0.4 * torch.sin(3 * (x + y))], -1)
        images.append((rgb * 255).round().to(torch.uint8))
    images = torch.stack(images)
    test = [0]
    train = list(range(1, num_views))
    return SceneDataset(
        name="plane",
        splits={
            "train": ImageSet(cams[train], images[train]),
            "test": ImageSet(cams[test], images[test]),
        },
        scene_box=torch.tensor([[-3.0, -3.0, -1.0], [3.0, 3.0, 6.0]]),
        near=2.0,
        far=10.0,
        unbounded=True,
        forward_facing=True,
    )


def test_llff_reader_sets_forward_facing_and_auto_picks_ndc(tmp_path):
    write_llff(tmp_path / "s", n=10, factor=2)
    ds = load_dataset(tmp_path / "s", downscale=2, progress=False)
    assert ds.forward_facing and ds.ndc is None and ds.ray_space == "world"
    ndc = apply_ray_space(ds, "auto")
    assert ndc.ray_space == "ndc"
    # all views loaded: the reference is the recentred average pose, i.e. the identity (NeRF's frame)
    torch.testing.assert_close(ndc.ndc.c2w, torch.eye(4)[:3], atol=1e-5, rtol=0)
    assert ndc.ndc.focal == (7.0, 7.0) and ndc.ndc.principal_point == (4.0, 3.0)
    # near plane: in front of all content (z-depth >= 1/0.75 from every camera) and not far from NeRF's 1.0
    assert 0.8 < ndc.ndc.near < 1.0 / 0.75
    box = ndc.ndc.box
    assert box[0, 2] == -1.0 and box[1, 2] == 1.0
    assert bool((box[0, :2] <= -1.0).all()) and bool((box[1, :2] >= 1.0).all())
    assert bool((box[:, :2].abs() <= 1.5).all())  # tight: these cameras barely move
    # the world description is untouched
    assert ndc.near == ds.near and ndc.far == ds.far and torch.equal(ndc.scene_box, ds.scene_box) and ndc.unbounded
    info = SceneInfo.from_dataset(ndc)
    assert info.near == 0.0 and not info.unbounded and torch.equal(info.scene_box, box) and info.ndc is ndc.ndc
    assert info.far >= 2.0
    # other choices
    assert apply_ray_space(ds, "world").ndc is None
    assert apply_ray_space(ds, "auto", allow_ndc=False).ndc is None  # e.g. Gaussian splatting
    with pytest.raises(InputError, match="--ray-space.*'ndc' needs a method that marches rays"):
        apply_ray_space(ds, "ndc", allow_ndc=False, where="DataConfig.ray_space (--ray-space)")
    with pytest.raises(InputError, match="ray_space: must be one of"):
        apply_ray_space(ds, "disparity")


def test_ndc_refused_for_a_scene_that_is_not_forward_facing(tiny_scene):
    assert not tiny_scene.forward_facing  # procedural: cameras all around the object
    assert apply_ray_space(tiny_scene, "auto").ndc is None
    with pytest.raises(InputError, match="NDC needs a forward-facing scene"):
        apply_ray_space(tiny_scene, "ndc")
    assert not looks_forward_facing(tiny_scene.split("train").cameras.c2w, depth=1.0)
    assert looks_forward_facing(plane_scene().split("train").cameras.c2w, depth=PLANE_Z)


def test_sampler_rays_are_the_ndc_rays_of_the_world_rays():
    ds = apply_ray_space(plane_scene(), "ndc")
    kw = dict(num_rays=64, near=ds.near, far=ds.far, seed=3)
    world = PixelSampler(ds.split("train"), **kw).sample(5)
    ndc = PixelSampler(ds.split("train"), ndc=ds.ndc, **kw).sample(5)
    torch.testing.assert_close(ndc.rgb, world.rgb)
    want = ds.ndc.rays(world.rays)
    for name in ("origins", "directions", "radii", "near", "far"):
        torch.testing.assert_close(getattr(ndc.rays, name), getattr(want, name))
    # every sample of every NDC ray lies inside the box the methods are built with
    box = ds.ndc.box
    for s in (0.0, 0.5, 1.0):
        p = ndc.rays.origins + (s * ndc.rays.far) * ndc.rays.directions
        assert bool(((p >= box[0] - 1e-5) & (p <= box[1] + 1e-5)).all())


class PlaneOracle(RayMethod):
    """Renders the plane ``z = PLANE_Z`` exactly, in whichever ray space it is given (depth in that space)."""

    def __init__(self, scene: SceneInfo) -> None:
        super().__init__()
        self.near, self.far = scene.near, scene.far
        self.set_ray_space(scene.ndc)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def render_rays(self, rays, background, *, with_normals=False, keep=None):
        z = PLANE_Z if self.ndc is None else 1.0 - 2.0 * self.ndc.near / PLANE_Z  # the plane in NDC (reference = identity)
        t = (z - rays.origins[:, 2:3]) / rays.directions[:, 2:3]
        n = len(rays)
        normals = torch.tensor([[0.0, 0.0, -1.0]]).expand(n, 3) if with_normals else None  # facing the cameras
        return RenderOutput(rgb=torch.zeros(n, 3), depth=t, accumulation=torch.ones(n, 1), normals=normals)


def test_render_camera_reports_world_depth_in_ndc():
    ds = plane_scene()
    ndc_ds = apply_ray_space(ds, "ndc")
    # a reference at the identity so the oracle can write the plane in NDC directly
    space = dataclasses.replace(ndc_ds.ndc, c2w=torch.eye(4)[:3])
    cams = ds.split("test").cameras
    world_depth = PlaneOracle(SceneInfo.from_dataset(ds)).render_camera(cams, torch.ones(3)).depth
    oracle = PlaneOracle(SceneInfo.from_dataset(dataclasses.replace(ndc_ds, ndc=space)))
    assert oracle.ndc is space
    ndc_out = oracle.render_camera(cams, torch.ones(3), with_normals=True)
    ndc_depth = ndc_out.depth
    torch.testing.assert_close(ndc_depth, world_depth, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ndc_out.normals, torch.tensor([0.0, 0.0, -1.0]).expand_as(ndc_out.normals), atol=1e-5, rtol=0)
    assert 3.9 < float(world_depth.min()) and float(world_depth.max()) < 5.0  # metres to the plane, not NDC units
    # training rays and rendering rays agree: the camera's rays equal the sampler's conversion
    rays = oracle.camera_rays(cams, 0).flatten()
    world = rays_from_camera(cams, 0, oracle.near, oracle.far).flatten()
    torch.testing.assert_close(rays.origins, space.rays(world).origins)


def test_make_method_sets_and_guards_the_ray_space():
    ds = apply_ray_space(plane_scene(), "ndc")
    info = SceneInfo.from_dataset(ds)
    assert uses_rays("ngp") and uses_rays("nerf") and not uses_rays("gaussians")
    ngp = make_method("ngp", info)
    assert ngp.ndc is ds.ndc
    torch.testing.assert_close(ngp.aabb, ds.ndc.box)
    with pytest.raises(ValueError, match="cannot work in NDC"):
        make_method("gaussians", info)
    # NGP marches inside the NDC box and Mip-NeRF takes the mapped cone radii
    batch = PixelSampler(ds.split("train"), num_rays=32, near=ds.near, far=ds.far, ndc=ds.ndc).sample(0)
    out = ngp.eval().outputs(batch.rays, batch.background)
    assert out.num_samples > 32 and bool(torch.isfinite(out.render.rgb).all())
    mip = make_method("mipnerf", info).eval()
    assert mip.ndc is ds.ndc
    a = mip.render_rays(batch.rays, batch.background).rgb
    b = mip.render_rays(dataclasses.replace(batch.rays, radii=batch.rays.radii * 50), batch.background).rgb
    assert bool(torch.isfinite(a).all()) and not torch.allclose(a, b)
    world_nerf = make_method("nerf", SceneInfo.from_dataset(plane_scene()))
    with pytest.raises(ValueError, match="built for world rays but dataset 'plane' is in ray space 'ndc'"):
        world_nerf.make_sampler(ds, SamplerOptions())


def test_nerf_trains_in_ndc_and_renders_world_depth():
    """300 NeRF steps in NDC (about 10 s on one thread): the loss falls, the held-out view is
    reconstructed well above the mean-colour baseline (~11 dB), and the rendered depth comes back in
    world units near the plane (~4.2 along the rays)."""
    from langfield.fields.nerf_field import NeRFFieldConfig
    from langfield.methods.nerf import NeRFConfig
    from langfield.runs.train import prepare_run
    from langfield.training.trainer import TrainerConfig

    torch.manual_seed(0)
    ds = apply_ray_space(plane_scene(), "auto")
    cfg = NeRFConfig(field=NeRFFieldConfig(depth=2, width=48, skip_layer=1, view_width=16), num_coarse=16, num_fine=16,
                     lr=5e-3, lr_final=5e-4)  # fmt: skip
    trainer = TrainerConfig(max_steps=300, num_rays=256, output_dir=None, progress=False, checkpoint_every=0,
                            log_every=100, device="cpu")  # fmt: skip
    run = prepare_run(ds, "nerf", trainer, cfg, preset="paper")
    assert run.method.ndc is ds.ndc and run.spec.data.ray_space == "ndc"
    batch = run.method.make_sampler(ds, SamplerOptions(num_rays=256)).sample(0)

    def batch_mse() -> float:
        run.method.eval()
        with torch.no_grad():
            return float(run.method.losses(run.method.outputs(batch.rays, batch.background), batch)["mse"])

    loss0 = batch_mse()
    run.trainer.train()
    loss1 = batch_mse()
    assert loss1 < 0.4 * loss0, (loss0, loss1)
    out = run.method.render_camera(ds.split("test").cameras, torch.ones(3))
    gt = ds.split("test").images[0].float() / 255.0
    psnr = -10.0 * math.log10(float((out.rgb - gt).square().mean()))
    assert psnr > 14.0, psnr
    depth = float(out.depth.median())
    assert 2.8 < depth < 5.5, depth  # NDC distances are below 2.3; the plane is ~4.2 away


def test_cli_ray_space_round_trip(tmp_path):
    """``langfield train --ray-space`` reaches the run: auto trains an LLFF folder in NDC, the reloaded
    run renders through the same NDC space with world depth, and ``world`` turns it off."""
    import json

    from langfield.cli.main import main
    from langfield.runs.loading import load_run

    write_llff(tmp_path / "s", n=10, factor=2)
    tiny = ["--method", "ngp", "--max-steps", "2", "--num-rays", "64", "--eval-every", "0", "--checkpoint-every", "0",
            "--device", "cpu", "--set", "field.hash_grid.num_levels=2", "--set", "field.hash_grid.log2_hashmap_size=10",
            "--set", "grid.resolution=16", "--set", "steps_per_diagonal=64"]  # fmt: skip
    for space in ("auto", "world"):
        run_dir = tmp_path / space
        rc = main(["train", "--data", str(tmp_path / "s"), "--downscale", "2", "--ray-space", space,
                   "--output-dir", str(run_dir), *tiny])  # fmt: skip
        assert rc == 0
        assert json.loads((run_dir / "run.json").read_text())["data"]["ray_space"] == space
        run = load_run(run_dir, device="cpu")
        assert (run.method.ndc is not None) == (space == "auto")
        if space == "auto":
            assert run.method.ndc.matches(run.dataset.ndc)
            torch.testing.assert_close(run.method.aabb, run.dataset.ndc.box)
    assert main(["render", str(tmp_path / "auto"), "--path", "spiral", "--num-frames", "2", "--device", "cpu",
                 "--outputs", "rgb", "depth"]) == 0  # fmt: skip


def test_capture_heuristic_needs_forward_views_and_points(tiny_scene):
    from langfield.data.ray_space import capture_looks_forward_facing

    ff = plane_scene().split("train").cameras.c2w
    g = torch.Generator().manual_seed(0)
    plane_pts = torch.cat([(torch.rand(50, 2, generator=g) - 0.5) * 4, torch.full((50, 1), PLANE_Z)], -1)
    assert capture_looks_forward_facing(ff, plane_pts)
    assert not capture_looks_forward_facing(ff, None)  # nothing to judge the depth by
    assert not capture_looks_forward_facing(ff, plane_pts * 0.05)  # content as near as the camera spread
    orbit = tiny_scene.split("train").cameras.c2w
    assert not capture_looks_forward_facing(orbit, (torch.rand(50, 3, generator=g) - 0.5))


def test_old_run_files_load_in_world_space():
    from langfield.configs import config_from_dict
    from langfield.runs.spec import DataConfig

    assert config_from_dict(DataConfig, {"path": "procedural"}).ray_space == "world"  # written before ray_space
    assert DataConfig().ray_space == "auto"
    assert config_from_dict(DataConfig, {"path": "x", "ray_space": "ndc"}).ray_space == "ndc"


@pytest.mark.skipif(not (SHARED_DATA / "llff" / "fern" / "poses_bounds.npy").is_file(), reason="shared fern data not available")
def test_fern_ndc_space():
    """Real LLFF: the reference is NeRF's (identity), the near plane close to NeRF's 1.0, the box tight."""
    ds = apply_ray_space(load_dataset(SHARED_DATA / "llff" / "fern", downscale=32, progress=False), "auto")
    torch.testing.assert_close(ds.ndc.c2w, torch.eye(4)[:3], atol=1e-5, rtol=0)
    assert 0.9 < ds.ndc.near < 1.2  # from the sparse points: 0.75 x their 0.5 % depth quantile
    box = ds.ndc.box
    assert bool((box[0, :2] < -1.2).all()) and bool((box[1, :2] > 1.2).all()) and bool((box.abs() < 1.7).all())
    rays = PixelSampler(ds.split("train"), num_rays=512, near=ds.near, far=ds.far, ndc=ds.ndc).sample(0).rays
    for s in (0.0, 1.0):
        p = rays.origins + s * rays.far * rays.directions
        assert bool(((p >= box[0] - 1e-5) & (p <= box[1] + 1e-5)).all())
