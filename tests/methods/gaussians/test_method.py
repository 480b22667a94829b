"""The Gaussian-splatting method through the generic trainer: training smoke, densification with
consistent optimiser state, resume, PLY round trip, NaN stop, initialisation and bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from langfield.fields.gaussian_cloud import GaussianCloud
from langfield.methods.base import SceneInfo
from langfield.types import ImageBatch
from langfield.methods.gaussians import DefaultStrategy, Gaussians, GaussiansConfig, MCMCStrategy, scene_extent
from langfield.methods.base import SceneInfo
from langfield.runs.export import export_run
from langfield.runs.train import prepare_run
from langfield.training.trainer import NonFiniteLossError, TrainerConfig

SMALL = GaussiansConfig(
    init_num_random=300,
    sh_degree=1,
    sh_degree_interval=4,
    strategy=DefaultStrategy(refine_start_iter=3, refine_every=4, reset_every=9, refine_stop_iter=100,
                            grow_grad2d=1e-6),
)


def trainer_config(tmp_path, steps, **kw):
    return TrainerConfig(max_steps=steps, output_dir=str(tmp_path), progress=False, log_every=1,
                         checkpoint_every=kw.pop("checkpoint_every", 0), **kw)


def test_two_training_steps_update_every_parameter(tiny_scene, tmp_path):
    run = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path, 2), SMALL)
    before = {k: v.detach().clone() for k, v in run.method.params.items()}
    record = run.trainer.train()
    assert math.isfinite(record["loss"]) and 0 < record["l1"] < 1
    for name in ("means", "scales", "opacities", "sh0"):
        assert not torch.equal(before[name], run.method.params[name]), name
    assert run.trainer.sampler.num_rays == 16 * 16


def test_densification_keeps_optimizer_state_aligned(tiny_scene, tmp_path):
    run = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path, 13), SMALL)
    method = run.method
    params_before = {k: id(v) for k, v in method.params.items()}
    run.trainer.train()
    state = method.strategy_state
    assert state["n_dupli"] + state["n_split"] > 0, "the low threshold must grow Gaussians"
    assert method.num_gaussians != 300
    for name, param in method.params.items():
        assert id(param) == params_before[name]  # the same Parameter objects ...
        opt = method._optimizers[name]
        assert opt.param_groups[0]["params"][0] is param  # ... still in their optimiser
        st = opt.state[param]
        assert st["exp_avg"].shape == param.shape and st["exp_avg_sq"].shape == param.shape
    assert int(method.active_sh_degree) == 1


def test_resume_after_densification_is_exact(tiny_scene, tmp_path):
    straight = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path / "a", 14), SMALL)
    straight.trainer.train()
    first = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path / "b", 14, checkpoint_every=7), SMALL)
    first.trainer.train()
    mid = tmp_path / "b" / "checkpoints" / "step_00000007.ckpt"
    resumed = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path / "c", 14), SMALL, resume=mid)
    assert resumed.trainer.step == 7 and resumed.method.num_gaussians == torch.load(mid)["model"]["cloud.params.means"].shape[0]
    resumed.trainer.train()
    for name, param in straight.method.params.items():
        assert torch.equal(param, resumed.method.params[name]), name


def test_ply_round_trip_renders_identically(tiny_scene, tmp_path):
    run = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path, 6, checkpoint_every=6), SMALL)
    run.trainer.train()
    path = export_run(tmp_path, "ply")
    assert path == tmp_path / "export" / "point_cloud.ply"
    cloud = GaussianCloud.from_ply(path)
    assert cloud.num_gaussians == run.method.num_gaussians
    fresh = Gaussians(SceneInfo.from_dataset(tiny_scene), SMALL)
    fresh.cloud = cloud
    fresh.active_sh_degree.copy_(run.method.active_sh_degree)
    cams = tiny_scene.split("test").cameras[0]
    bg = torch.ones(3)
    a = run.method.render_camera(cams, bg)
    b = fresh.render_camera(cams, bg)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    assert float(a.accumulation.max()) > 0.5


def test_export_refuses_other_methods_and_formats(tiny_scene, tmp_path):
    run = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path, 1, checkpoint_every=1), SMALL)
    run.trainer.train()
    with pytest.raises(ValueError, match="format"):
        export_run(tmp_path, "splat")
    ngp = prepare_run(tiny_scene, "ngp", trainer_config(tmp_path / "ngp", 1, checkpoint_every=1))
    ngp.trainer.train()
    with pytest.raises(ValueError, match="only 'gaussians'"):
        export_run(tmp_path / "ngp", "ply")


def test_nan_loss_stops_training_and_keeps_the_checkpoint(tiny_scene, tmp_path):
    run = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path, 10, checkpoint_every=2), SMALL)
    run.trainer.config = dataclasses.replace(run.trainer.config, max_steps=2)
    run.trainer.train()
    good = run.trainer.last_checkpoint
    assert good is not None and good.is_file()
    run.trainer.config = dataclasses.replace(run.trainer.config, max_steps=10)
    with torch.no_grad():
        run.method.params["sh0"][:] = float("nan")
    with pytest.raises(NonFiniteLossError, match="last good checkpoint kept"):
        run.trainer.train()
    assert run.trainer.last_checkpoint == good


def test_initialisation_from_sparse_points():
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    rgb = torch.tensor([[255, 0, 0]] * 5, dtype=torch.uint8)
    scene = SceneInfo(scene_box=torch.tensor([[-1.0] * 3, [2.0] * 3]), near=0.1, far=10, num_train_images=1,
                      points3d=pts, points3d_rgb=rgb)
    m = Gaussians(scene, GaussiansConfig(sh_degree=0))
    assert m.num_gaussians == 5 and torch.equal(m.cloud.means.detach(), pts)
    colour = m.cloud.params["sh0"][:, 0] * 0.28209479177387814 + 0.5
    assert torch.allclose(colour, torch.tensor([1.0, 0.0, 0.0]).expand(5, 3), atol=1e-6)
    # Scale = mean distance to the 3 nearest neighbours (for the origin: 1, 1, 1).
    assert math.isclose(float(m.cloud.scales[0, 0].detach()), 1.0, rel_tol=1e-6)
    assert math.isclose(float(torch.sigmoid(m.cloud.params["opacities"][0].detach())), 0.1, rel_tol=1e-5)


def test_scene_extent_follows_the_reference():
    centers = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 3.0, 0]])
    scene = SceneInfo(scene_box=torch.zeros(2, 3), near=0, far=1, num_train_images=3, camera_centers=centers)
    mean = centers.mean(0)
    assert math.isclose(scene_extent(scene), 1.1 * float((centers - mean).norm(dim=-1).max()), rel_tol=1e-6)


def test_bad_configuration_and_input(tiny_scene):
    with pytest.raises(ValueError, match="strategy"):
        GaussiansConfig(strategy="magic")
    with pytest.raises(ValueError, match="sh_degree"):
        GaussiansConfig(sh_degree=4)
    with pytest.raises(ValueError, match="points3D"):
        Gaussians(SceneInfo.from_dataset(tiny_scene), GaussiansConfig(init="points"))
    with pytest.raises(ValueError, match="NaN"):
        GaussianCloud.from_points(torch.tensor([[float("nan"), 0, 0]]), torch.zeros(1, 3))
    m = Gaussians(SceneInfo.from_dataset(tiny_scene), SMALL)
    with torch.no_grad():
        m.params["scales"][3] = float("nan")
    with pytest.raises(ValueError, match="scales"):
        m.cloud.check_finite()


def test_mcmc_strategy_trains_with_a_fixed_budget(tiny_scene, tmp_path):
    cfg = dataclasses.replace(SMALL, strategy=MCMCStrategy(cap_max=330, refine_start_iter=2, refine_every=3))
    run = prepare_run(tiny_scene, "gaussians", trainer_config(tmp_path, 12), cfg)
    record = run.trainer.train()
    assert 300 < run.method.num_gaussians <= 330
    assert "mcmc_reg" in record


def _losses(method, tiny_scene):
    train = tiny_scene.split("train")
    cams = train.cameras[0]
    bg = torch.ones(3)
    outputs = method.outputs(cams, bg)
    batch = ImageBatch(cams, torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(0)), bg, 0)
    return method.losses(outputs, batch)


def test_losses_add_the_strategy_regulariser_through_its_hook(tiny_scene):
    scene = SceneInfo.from_dataset(tiny_scene)
    plain = _losses(Gaussians(scene, SMALL), tiny_scene)
    assert not any(k.endswith("_reg") for k in plain)
    lam = SMALL.ssim_lambda
    torch.testing.assert_close(plain["loss"], (1 - lam) * plain["l1"] + lam * plain["dssim"])

    mcmc = Gaussians(scene, dataclasses.replace(SMALL, strategy=MCMCStrategy()))
    terms = _losses(mcmc, tiny_scene)
    expected_reg = 0.01 * torch.sigmoid(mcmc.params["opacities"]).mean() + 0.01 * torch.exp(mcmc.params["scales"]).mean()
    torch.testing.assert_close(terms["mcmc_reg"], expected_reg)
    torch.testing.assert_close(terms["loss"], plain["loss"] + expected_reg)  # same cloud (same seed)

    @dataclasses.dataclass(frozen=True)
    class ConstantReg(DefaultStrategy):
        config_type = "constant"

        def regularization(self, params):
            return params["means"].new_tensor(0.25)

    hooked = Gaussians(scene, SMALL)
    hooked.strategy = ConstantReg()  # the method asks the hook; it never checks a strategy's name
    terms = _losses(hooked, tiny_scene)
    assert float(terms["constant_reg"]) == 0.25
    torch.testing.assert_close(terms["loss"], plain["loss"] + 0.25)
