"""OV-NeRF's RSR (region labels + relevancy cross-entropy) and CSE (rendered labels, novel views),
their config switches, and a tiny end-to-end distillation with both OV-NeRF modes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from langfield._checks import InputError
from langfield.configs import config_to_dict
from langfield.language.distillation import LanguageFieldConfig, language_config_from_dict
from langfield.language.ovnerf_cse import novel_view_poses, self_enhanced_labels
from langfield.language.ovnerf_rsr import (
    IGNORE_LABEL,
    OVNeRFConfig,
    rank_region_labels,
    region_semantic_ranking_labels,
    relevancy_cross_entropy,
    relevancy_cross_entropy_reference,
    relevancy_logits,
)

TEXT = torch.eye(3, 8)  # three orthogonal label embeddings: A = 0, B = 1, C = 2


def _features(labels: torch.Tensor, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """``[H, W, 8]`` unit features pointing at each pixel's label embedding, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    f = TEXT[labels] + noise * torch.randn(*labels.shape, 8, generator=gen)
    return F.normalize(f, dim=-1)


def test_relevancy_logits_values_and_temperature():
    f = torch.tensor([[3.0, 4.0, 0, 0, 0, 0, 0, 0]])
    assert torch.allclose(relevancy_logits(f, TEXT), torch.tensor([[0.6, 0.8, 0.0]]))
    assert torch.allclose(relevancy_logits(f, TEXT, 0.1), torch.tensor([[6.0, 8.0, 0.0]]))


def test_mask_mostly_favouring_a_gets_a_everywhere():
    labels = torch.zeros(4, 6, dtype=torch.int64)
    labels[:, 3:] = 2  # right half: C, outside the mask
    labels[0, 0] = 1  # two noisy B pixels inside the mask
    labels[2, 1] = 1
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[0, :, :3] = True
    out = rank_region_labels(labels, mask, 3)
    assert (out[:, :3] == 0).all()
    assert (out[:, 3:] == 2).all()  # uncovered pixels keep their own label
    # The same from features: the noisy pixels' relevancy favours B, the region's majority A.
    feats = _features(labels)
    assert torch.equal(region_semantic_ranking_labels(feats, TEXT, mask), out)


def test_ranking_ties_overlaps_and_ignored_votes():
    labels = torch.tensor([[1, 1, 0, 0], [2, 2, 2, 2]])
    masks = torch.zeros(3, 2, 4, dtype=torch.bool)
    masks[0, 0] = True  # tie 2 x B, 2 x A -> the lower id (A)
    masks[1] = True  # the whole image: C has 4 votes of 8 -> C, but finer masks win
    masks[2, 1, :2] = True  # finer mask inside the second row
    out = rank_region_labels(labels, masks, 3)
    assert out.tolist() == [[0, 0, 0, 0], [2, 2, 2, 2]]
    # Ignored pixels do not vote; a mask with no votes leaves its pixels alone.
    ign = torch.tensor([[IGNORE_LABEL, IGNORE_LABEL, 1, IGNORE_LABEL]])
    m = torch.tensor([[[True, True, True, False]]])
    assert rank_region_labels(ign, m, 3).tolist() == [[1, 1, 1, IGNORE_LABEL]]
    assert torch.equal(rank_region_labels(labels, masks[:0], 3), labels)


def test_ranking_bad_input():
    labels = torch.zeros(2, 2, dtype=torch.int64)
    with pytest.raises(InputError, match="pixel_labels"):
        rank_region_labels(labels.float(), torch.ones(1, 2, 2, dtype=torch.bool), 3)
    with pytest.raises(InputError, match="masks"):
        rank_region_labels(labels, torch.ones(1, 3, 2, dtype=torch.bool), 3)
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        rank_region_labels(labels + 3, torch.ones(1, 2, 2, dtype=torch.bool), 3)
    with pytest.raises(InputError, match="num_classes"):
        rank_region_labels(labels, torch.ones(1, 2, 2, dtype=torch.bool), 0)
    with pytest.raises(InputError, match="text"):
        relevancy_logits(torch.ones(2, 8), torch.ones(3))
    with pytest.raises(InputError, match="E = 8"):
        relevancy_logits(torch.ones(2, 5), TEXT)


def test_cross_entropy_matches_reference_values_and_gradients():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(6, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    text = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 2, IGNORE_LABEL, 1, 1, 0])
    fast = relevancy_cross_entropy(feats, text, labels, 0.2)
    ref = relevancy_cross_entropy_reference(feats, text, labels, 0.2)
    assert torch.allclose(fast, ref, atol=1e-12)
    g = torch.randn((), generator=gen, dtype=torch.float64)
    (gf,) = torch.autograd.grad(fast * g, feats)
    (gr,) = torch.autograd.grad(ref * g, feats)
    assert torch.allclose(gf, gr, atol=1e-12)
    assert gf[2].abs().max() == 0  # the ignored pixel gets no gradient
    assert torch.autograd.gradcheck(lambda f: relevancy_cross_entropy(f, text, labels, 0.2), (feats,))
    # Hand value: a feature equal to label 0 of two orthogonal labels, T = 1: log(1 + e^-1).
    one = relevancy_cross_entropy(torch.tensor([[1.0, 0.0]]), torch.eye(2), torch.tensor([0]))
    assert abs(float(one) - float(torch.log1p(torch.exp(torch.tensor(-1.0))))) < 1e-6
    # All ignored: zero, still a graph.
    none = relevancy_cross_entropy(feats, text, torch.full((6,), IGNORE_LABEL))
    assert float(none.detach()) == 0.0 and none.requires_grad
    with pytest.raises(InputError, match="labels"):
        relevancy_cross_entropy(feats, text, labels[:3])


def test_cse_corrects_a_region_mislabelled_in_one_view():
    """View 1's teacher calls the object B; the 3D field (fitted to the views that agree) renders A
    with a few B pixels. CSE's labels (render + RSR) are A over the whole object mask; RSR on the
    teacher alone keeps the wrong B."""
    truth = torch.zeros(6, 6, dtype=torch.int64)
    truth[:, 4:] = 2  # background C
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[0, :, :4] = True
    mask[1, :, 4:] = True
    teacher_view1 = truth.clone()
    teacher_view1[:, :4] = 1  # the 2D teacher: B
    rendered = truth.clone()
    rendered[0, :2] = 1  # the render: mostly A, a B rim
    from_teacher = region_semantic_ranking_labels(_features(teacher_view1), TEXT, mask)
    enhanced = self_enhanced_labels(_features(rendered, seed=3), TEXT, mask)
    assert (from_teacher[:, :4] == 1).all()
    assert torch.equal(enhanced, truth)


def test_novel_view_poses_between_nearest_neighbours():
    c2w = torch.zeros(3, 3, 4)
    c2w[:, :, :3] = torch.eye(3)
    c2w[:, 0, 3] = torch.tensor([0.0, 1.0, 5.0])  # camera 2 is far: its nearest is camera 1
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg about z
    c2w[1, :, :3] = rot
    poses = novel_view_poses(c2w, 5)
    assert poses.shape == (5, 3, 4)
    # First pass: midpoints (t = 1/3 with two passes) of 0-1, 1-0, 2-1; second pass t = 2/3.
    assert torch.allclose(poses[:, 0, 3], torch.tensor([1 / 3, 2 / 3, 11 / 3, 2 / 3, 1 / 3]), atol=1e-5)
    # Rotations stay rotations; the 0 -> 1 view at t = 1/3 is turned by 30 degrees about z.
    r = poses[:, :, :3]
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-5)
    angle = torch.atan2(r[0, 1, 0], r[0, 0, 0])
    assert abs(float(angle) - torch.pi / 6) < 1e-4
    assert novel_view_poses(c2w, 0).shape == (0, 3, 4)
    with pytest.raises(InputError, match="num_views"):
        novel_view_poses(c2w, -1)
    with pytest.raises(InputError, match=">= 2"):
        novel_view_poses(c2w[:1], 2)


def test_config_modes_and_old_flags():
    assert LanguageFieldConfig().rsr_mode == "mask-pool" and LanguageFieldConfig().cse_mode == "render-refresh"
    assert LanguageFieldConfig().variant == "field+rsr+cse"  # the old default, unchanged
    off = LanguageFieldConfig(use_rsr=False, use_cse=False)
    assert (off.rsr_mode, off.cse_mode, off.variant) == ("off", "off", "field")
    ov = LanguageFieldConfig(rsr_mode="ovnerf", cse_mode="ovnerf")
    assert ov.use_rsr and ov.use_cse and ov.needs_labels and ov.variant == "field+ovnerf-rsr+ovnerf-cse"
    assert not LanguageFieldConfig(rsr_mode="off").use_rsr
    with pytest.raises(InputError, match="use_rsr=False contradicts rsr_mode='ovnerf'"):
        LanguageFieldConfig(use_rsr=False, rsr_mode="ovnerf")
    with pytest.raises(InputError, match="cse_mode"):
        LanguageFieldConfig(cse_mode="cse")
    with pytest.raises(ValueError, match="gaussian_latent_dim"):
        LanguageFieldConfig(gaussian_latent_dim=0)
    with pytest.raises(ValueError, match="temperature"):
        OVNeRFConfig(temperature=0.0)
    with pytest.raises(ValueError, match="novel_views"):
        OVNeRFConfig(novel_views=-1)
    # A stored config from before the modes existed loads with its flags' meaning.
    old = config_to_dict(LanguageFieldConfig())
    for key in ("rsr_mode", "cse_mode", "ovnerf"):
        old.pop(key)
    old["use_cse"] = False
    cfg = language_config_from_dict(old)
    assert (cfg.rsr_mode, cfg.cse_mode) == ("mask-pool", "off")
    assert language_config_from_dict(config_to_dict(ov)) == ov


_OVERRIDES = {
    "ngp": {
        "field.hash_grid.num_levels": 2, "field.hash_grid.log2_hashmap_size": 10, "field.hash_grid.max_resolution": 32,
        "field.hidden_dim": 16, "grid.resolution": 16, "steps_per_diagonal": 32, "min_rays": 16, "max_rays": 256,
    },
    "gaussians": {"init_num_random": 200, "sh_degree": 1},
}  # fmt: skip
_RUNS: dict = {}


def _tiny_run(kind: str, tmp_path_factory):
    """A 3-step run of ``kind`` on the 16x16 procedural scene (4 views), built once per module."""
    if kind not in _RUNS:
        from langfield.runs.spec import PROCEDURAL, DataConfig
        from langfield.runs.train import train
        from langfield.training.trainer import TrainerConfig

        out = tmp_path_factory.mktemp(f"ovnerf_{kind}")
        cfg = TrainerConfig(max_steps=3, num_rays=64, eval_every=0, checkpoint_every=0, log_every=1, output_dir=str(out),
                            device="cpu", progress=False)  # fmt: skip
        data = DataConfig(PROCEDURAL, procedural_size=16, procedural_views=4)
        run = train(data, kind, cfg, preset="cpu", overrides=_OVERRIDES[kind])
        _RUNS[kind] = (run.dataset, run.method.eval())
    return _RUNS[kind]


@pytest.fixture
def tiny_ngp_run(tmp_path_factory):
    return _tiny_run("ngp", tmp_path_factory)


def _tiny_language_config(**kw) -> LanguageFieldConfig:
    from langfield.fields.semantic import HashFeatureFieldConfig
    from langfield.language.cse import CSEConfig
    from langfield.language.masks import MaskProposalConfig
    from langfield.ops.hash_encoding import HashGridConfig

    return LanguageFieldConfig(
        steps=4, rays_per_step=64, autoencoder_steps=4, top_k=4, cse=CSEConfig(rounds=1, steps_fraction=0.5),
        masks=MaskProposalConfig(method="superpixels", scale=20.0, min_size=8, merge_threshold=5.0),
        field=HashFeatureFieldConfig(
            hash_grid=HashGridConfig(num_levels=2, features_per_level=2, log2_hashmap_size=10, max_resolution=32),
            hidden_dim=16, num_hidden=1,
        ),
        **kw,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["ngp", "gaussians"])
def test_distillation_with_both_ovnerf_modes(kind, tmp_path_factory, tmp_path):
    import json

    from langfield.language.distillation import LanguageDistillation
    from langfield.language.teachers import load_teacher

    dataset, method = _tiny_run(kind, tmp_path_factory)
    teacher = load_teacher("simulated", dataset.labels)
    cfg = _tiny_language_config(rsr_mode="ovnerf", cse_mode="ovnerf", ovnerf=OVNeRFConfig(novel_views=2), gaussian_latent_dim=5)
    job = LanguageDistillation(method, dataset, teacher, cfg, output_dir=tmp_path / "language", progress=False)
    summary = job.run()
    assert summary["variant"] == "field+ovnerf-rsr+ovnerf-cse" and len(summary["phases"]) == 2
    # Gaussian codes have their own width (gaussian_latent_dim), the NGP head's codes latent_dim.
    d = cfg.gaussian_latent_dim if kind == "gaussians" else cfg.latent_dim
    assert job.field.latent_dim == d and job.latent_targets.shape[-1] == d
    if kind == "gaussians":
        assert job.field.codes.shape == (method.gaussian_cloud().num_gaussians, d)
    v, h, w = len(dataset.split("train")), dataset.split("train").height, dataset.split("train").width
    assert job.labels.shape == (v, h, w) and job.labels.dtype == torch.int64
    assert 0 <= int(job.labels.min()) and int(job.labels.max()) < len(dataset.labels)
    assert job.novel_labels.shape == (2, h, w) and len(job.novel_geometry) == 2
    term = job.label_term()
    if kind == "ngp":
        assert term.labels.shape == (v * h * w,) and len(term.novel_geometry) == 2 * h * w
    else:
        assert term.labels.shape == (v, h, w) and len(term.novel_geometry) == 2
    # Both cross-entropies were optimised: RSR's in the first fit, RSR's and the novel views' in CSE.
    phases = tmp_path / "language" / "phases"
    fit = [json.loads(x) for x in (phases / "0_fit" / "metrics.jsonl").read_text().splitlines()]
    cse = [json.loads(x) for x in (phases / "1_cse1" / "metrics.jsonl").read_text().splitlines()]
    assert any("relevancy" in r and "relevancy_novel" not in r for r in fit)
    assert any("relevancy" in r and "relevancy_novel" in r for r in cse)
    # The feature targets stay the teacher's (OV-NeRF changes labels, not features).
    assert torch.equal(job.targets, job.raw)
    assert 0.0 <= summary["phases"][1]["replaced"] <= 1.0
    # A finished job resumes without refitting.
    again = LanguageDistillation(method, dataset, teacher, cfg, output_dir=tmp_path / "language", progress=False)
    assert again.run()["phases"] == summary["phases"]


def test_automatic_gaussian_width_is_the_forced_width_it_picks(tmp_path_factory, tmp_path):
    from langfield.language.distillation import LanguageDistillation, build_language_field, read_language_field
    from langfield.language.teachers import load_teacher

    dataset, method = _tiny_run("gaussians", tmp_path_factory)
    teacher = load_teacher("simulated", dataset.labels)
    # Tolerance 0: every candidate is fitted unless one is perfectly faithful.
    cfg = _tiny_language_config(use_rsr=False, use_cse=False, gaussian_latent_widths=(4, 2), blend_tolerance=0.0)
    assert cfg.gaussian_latent_dim is None and cfg.gaussian_latent_widths == (2, 4)  # sorted
    job = LanguageDistillation(method, dataset, teacher, cfg, output_dir=tmp_path / "auto", progress=False)
    assert job.field.latent_dim == 2  # built at the narrowest candidate until the test has run
    phase0 = job.run()["phases"][0]
    shares = {int(w): v for w, v in phase0["blend_shares"].items()}
    assert set(shares) == ({2} if shares[2] == 0.0 else {2, 4})
    chosen = phase0["latent_width"]
    assert chosen == min(sorted(shares), key=lambda w: shares[w])
    assert job.field.latent_dim == chosen and job.field.codes.shape[1] == chosen and job.latent_targets.shape[-1] == chosen
    # The same field as a job told that width: each candidate starts from the forced job's seed.
    forced = LanguageDistillation(method, dataset, teacher, _tiny_language_config(use_rsr=False, use_cse=False,
                                  gaussian_latent_dim=chosen), progress=False)  # fmt: skip
    forced.run()
    assert torch.equal(forced.field.codes, job.field.codes)
    assert all(torch.equal(a, b) for a, b in zip(forced.field.autoencoder.state_dict().values(),
                                                 job.field.autoencoder.state_dict().values()))  # fmt: skip
    # Queries rebuild the chosen width; a finished job resumes at it without refitting.
    field_, _ = build_language_field(read_language_field(tmp_path / "auto" / "field.pt"), method)
    assert field_.latent_dim == chosen and torch.equal(field_.codes, job.field.codes)
    again = LanguageDistillation(method, dataset, teacher, cfg, output_dir=tmp_path / "auto", progress=False)
    assert again.run()["phases"][0] == phase0 and again.field.latent_dim == chosen
    # A generous tolerance stops at the narrowest width after one autoencoder.
    easy = LanguageDistillation(method, dataset, teacher, dataclasses.replace(cfg, blend_tolerance=1.0), progress=False)
    phase0 = easy.run()["phases"][0]
    assert phase0["latent_width"] == 2 and list(phase0["blend_shares"]) == ["2"]


def test_width_settings_are_checked():
    with pytest.raises(ValueError, match="gaussian_latent_widths"):
        LanguageFieldConfig(gaussian_latent_widths=())
    with pytest.raises(ValueError, match="gaussian_latent_widths"):
        LanguageFieldConfig(gaussian_latent_widths=(3, 3))
    with pytest.raises(ValueError, match="gaussian_latent_widths"):
        LanguageFieldConfig(gaussian_latent_widths=(0, 3))
    with pytest.raises(InputError, match="blend_tolerance"):
        LanguageFieldConfig(blend_tolerance=1.5)
    assert language_config_from_dict(config_to_dict(LanguageFieldConfig(gaussian_latent_dim=8))).gaussian_latent_dim == 8


def test_ovnerf_modes_need_label_names(tiny_ngp_run):
    from langfield.language.distillation import LanguageDistillation
    from langfield.language.teachers import load_teacher

    dataset, method = tiny_ngp_run
    teacher = load_teacher("simulated", dataset.labels)
    unlabelled = dataclasses.replace(dataset, labels=None)
    with pytest.raises(InputError, match="rsr_mode='ovnerf'.*SceneDataset.labels"):
        LanguageDistillation(method, unlabelled, teacher, _tiny_language_config(rsr_mode="ovnerf"), progress=False)
    with pytest.raises(InputError, match="cse_mode='ovnerf'"):
        LanguageDistillation(method, unlabelled, teacher, _tiny_language_config(cse_mode="ovnerf"), progress=False)


def test_field_from_before_the_modes_resumes(tiny_ngp_run, tmp_path):
    """A field.pt whose stored config predates rsr_mode/cse_mode/ovnerf is the same job: resumed, not redone."""
    from langfield.language.distillation import LanguageDistillation
    from langfield.language.teachers import load_teacher

    dataset, method = tiny_ngp_run
    teacher = load_teacher("simulated", dataset.labels)
    cfg = _tiny_language_config(use_cse=False)
    out = tmp_path / "language"
    first = LanguageDistillation(method, dataset, teacher, cfg, output_dir=out, progress=False).run()
    state = torch.load(out / "field.pt", weights_only=True)
    for key in ("rsr_mode", "cse_mode", "ovnerf"):
        del state["config"][key]
    torch.save(state, out / "field.pt")
    again = LanguageDistillation(method, dataset, teacher, cfg, output_dir=out, progress=False)
    assert again.run()["phases"] == first["phases"]
    assert again.phase_done == 0 and (out / "phases" / "0_fit").is_dir()
