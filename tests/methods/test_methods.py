"""Every method: a two-step training smoke test through the generic trainer, plus method-specific checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from langfield.fields.ngp_field import NGPFieldConfig
from langfield.methods.ngp import NGPConfig
from langfield.methods.nerf import NeRFConfig
from langfield.methods.mipnerf import MipNeRFConfig
from langfield.fields.nerf_field import NeRFFieldConfig
from langfield.ops.hash_encoding import HashGridConfig
from langfield.runs.train import prepare_run
from langfield.training.trainer import TrainerConfig

SMALL_MLP = NeRFFieldConfig(depth=2, width=32, skip_layer=1, view_width=16)
CONFIGS = {
    "ngp": NGPConfig(field=NGPFieldConfig(hash_grid=HashGridConfig(num_levels=4, log2_hashmap_size=12, max_resolution=64)),
                     steps_per_diagonal=128),
    "nerf": NeRFConfig(field=SMALL_MLP, num_coarse=8, num_fine=8),
    "mipnerf": MipNeRFConfig(field=SMALL_MLP, num_samples=8),
}


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_two_step_training_smoke(method, tiny_scene, tmp_path):
    cfg = TrainerConfig(max_steps=2, num_rays=64, output_dir=str(tmp_path), progress=False, checkpoint_every=0, log_every=1, device="cpu")
    run = prepare_run(tiny_scene, method, cfg, CONFIGS[method])
    before = {k: v.detach().clone() for k, v in run.method.named_parameters()}
    record = run.trainer.train()
    assert run.trainer.step == 2
    assert torch.isfinite(torch.tensor(record["loss"]))
    changed = [k for k, v in run.method.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "no parameter was updated"
    assert (tmp_path / "checkpoints" / "latest.ckpt").is_file()
    out = run.trainer.evaluate("test", num_images=1)
    assert 0.0 < out["psnr"] < 60.0


def test_ngp_adaptive_batch_targets_samples(tiny_scene):
    from langfield.methods.registry import make_method
    from langfield.methods.base import SceneInfo
    from langfield.geometry.rays import rays_from_camera

    cfg = dataclasses.replace(CONFIGS["ngp"], target_samples_per_step=1000, min_rays=1, max_rays=10**6)
    m = make_method("ngp", SceneInfo.from_dataset(tiny_scene), cfg).train()
    assert m.num_rays_hint() is None
    rays = rays_from_camera(tiny_scene.split("train").cameras, 0, tiny_scene.near, tiny_scene.far).flatten()
    out = m.outputs(rays, torch.ones(len(rays), 3))
    spr = out.num_samples / len(rays)
    assert spr > 1
    assert m.num_rays_hint() == int(1000 / spr)


def test_mipnerf_uses_ray_radii(tiny_scene):
    """Mip-NeRF must render differently when the cone radius changes (NeRF ignores it)."""
    from langfield.methods.registry import make_method
    from langfield.methods.base import SceneInfo
    from langfield.geometry.rays import rays_from_camera

    torch.manual_seed(0)
    m = make_method("mipnerf", SceneInfo.from_dataset(tiny_scene), CONFIGS["mipnerf"]).eval()
    rays = rays_from_camera(tiny_scene.split("train").cameras, 0, tiny_scene.near, tiny_scene.far).flatten()[:32]
    a = m.render_rays(rays, torch.ones(32, 3)).rgb
    wide = dataclasses.replace(rays, radii=rays.radii * 50)
    b = m.render_rays(wide, torch.ones(32, 3)).rgb
    assert not torch.allclose(a, b)


def test_evaluation_renders_default_to_the_devices_ray_chunk(tiny_scene, monkeypatch):
    """``chunk=None`` renders in :data:`CPU_RAY_CHUNK` rays on the CPU (a smaller chunk renders the
    same image, up to the float order of the MLPs' batched sums), and bad chunks are refused."""
    import langfield.methods.base as base
    from langfield.methods.base import SceneInfo
    from langfield.methods.registry import make_method

    assert base.default_ray_chunk(None, "cpu") == base.CPU_RAY_CHUNK == 2048
    assert base.default_ray_chunk(None, "cuda") == base.GPU_RAY_CHUNK == 8192
    assert base.default_ray_chunk(100, "cpu") == 100
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk must be an int >= 1"):
            base.default_ray_chunk(bad, "cpu")
    m = make_method("nerf", SceneInfo.from_dataset(tiny_scene), CONFIGS["nerf"]).eval()
    cam, bg = tiny_scene.split("test").cameras[0], tiny_scene.eval_background()
    calls = []
    real = m.render_rays
    monkeypatch.setattr(m, "render_rays", lambda rays, *a, **k: calls.append(len(rays)) or real(rays, *a, **k))
    monkeypatch.setattr(base, "CPU_RAY_CHUNK", 100)
    out = m.render_camera(cam, bg)
    num = int(cam.widths[0]) * int(cam.heights[0])
    assert calls == [100] * (num // 100) + ([num % 100] if num % 100 else [])
    calls.clear()
    whole = m.render_camera(cam, bg, chunk=num)
    assert calls == [num]
    assert torch.allclose(out.rgb, whole.rgb, atol=1e-6) and torch.allclose(out.depth, whole.depth, atol=1e-5)
    with pytest.raises(ValueError, match="chunk"):
        m.render_camera(cam, bg, chunk=0)
