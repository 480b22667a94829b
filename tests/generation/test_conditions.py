"""Control conditions (langfield.generation.conditions): shapes, dtypes and ranges for every input
kind, a correctness check per condition that a broken version would fail, and bad-input errors."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import langfield.generation as generation
from langfield._checks import InputError
from langfield.generation import conditions as C

S = 64  # image side


def _square(size: int = S, lo: int = 20, hi: int = 44, colour=(0.9, 0.3, 0.2)) -> np.ndarray:
    """A filled square (rows/cols ``lo .. hi - 1``) on black; its outline lies at ``lo - 0.5`` / ``hi - 0.5``."""
    img = np.zeros((size, size, 3), np.float32)
    img[lo:hi, lo:hi] = colour
    return img


def _dist_to_outline(size: int = S, lo: int = 20, hi: int = 44) -> np.ndarray:
    """Distance of each pixel centre to the square's outline (pixels)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    a, b = lo - 0.5, hi - 0.5
    dx = np.maximum(np.maximum(a - xx, xx - b), 0.0)
    dy = np.maximum(np.maximum(a - yy, yy - b), 0.0)
    outside = np.hypot(dx, dy)
    inside = np.minimum.reduce([xx - a, b - xx, yy - a, b - yy])
    return np.where(outside > 0, outside, np.abs(inside))


IMAGE_CONDITIONS = [C.canny, C.soft_edge, C.lineart, C.scribble, C.mlsd_lines, C.palette_condition]


@pytest.mark.parametrize("fn", IMAGE_CONDITIONS, ids=lambda f: f.__name__)
def test_image_conditions_shapes_types_and_ranges(fn):
    img = _square()
    one = fn(img)
    assert isinstance(one, np.ndarray) and one.shape == (S, S, 3) and one.dtype == np.float32
    assert one.min() >= 0.0 and one.max() <= 1.0 and one.max() > 0.5  # something is drawn
    assert np.array_equal(one[..., 0], one[..., 1]) or fn is C.palette_condition
    flipped = img[::-1, ::-1].copy()
    batch = fn(np.stack([img, flipped]))
    assert batch.shape == (2, S, S, 3)
    np.testing.assert_allclose(batch[0], one, atol=1e-6)  # a batch is its images, one by one
    np.testing.assert_allclose(batch[1], fn(flipped), atol=1e-6)
    if fn not in (C.scribble, C.mlsd_lines):  # (thinning and Hough voting are not flip-symmetric)
        np.testing.assert_allclose(batch[1], one[::-1, ::-1], atol=1e-5)  # the flipped image, flipped
    u8 = fn(np.round(img * 255).astype(np.uint8))
    np.testing.assert_allclose(u8, fn(np.round(img * 255) / 255), atol=1e-6)
    t = fn(torch.from_numpy(img))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (S, S, 3)
    np.testing.assert_allclose(t.numpy(), one, atol=1e-6)
    half = fn(torch.from_numpy(img).to(torch.bfloat16)[None])  # half precision in, float32 out
    assert half.dtype == torch.float32 and half.shape == (1, S, S, 3)


def test_canny_finds_the_square_outline_and_nothing_else():
    e = C.canny(_square())[..., 0] > 0.5
    d = _dist_to_outline()
    assert d[e].max() <= 1.0  # every edge pixel within a pixel of the outline
    assert not e[d > 3].any()  # flat regions (inside and outside) have no edge
    # recall: every outline pixel (just inside the square) has an edge pixel within 1 px
    near = np.zeros_like(e)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(e, dy, 0), dx, 1)
    ring = (d <= 0.5) & (_dist_to_outline(S, 21, 43) > 0)  # the square's own outermost pixels
    assert near[ring].mean() > 0.95
    assert not C.canny(np.full((S, S, 3), 0.4, np.float32)).any()


def test_canny_rgb_keeps_an_equal_luma_edge():
    img = np.empty((32, 32, 3), np.float32)
    img[:, :16] = (0.5, 0.5, 0.5)
    img[:, 16:] = (1.0, (0.5 - 0.299) / 0.587, 0.0)  # the same BT.601 luma, 0.5
    assert not C.canny(img).any()
    e = C.canny(img, channels="rgb")[..., 0] > 0.5
    cols = np.flatnonzero(e.any(axis=0))
    assert e[4:-4].any(axis=1).all() and set(cols) <= {14, 15, 16, 17}


def test_soft_edge_bright_on_edges_dark_on_flat():
    e = C.soft_edge(_square())[..., 0]
    d = _dist_to_outline()
    assert e[d <= 1].mean() > 0.7
    assert e[d > 12].max() < 0.05
    assert e.max() == pytest.approx(1.0)
    assert C.soft_edge(np.full((S, S, 3), 0.7, np.float32)).max() == 0.0
    # faint texture (contrast 0.01) never saturates: the min_contrast floor
    rng = np.random.default_rng(0)
    faint = (0.5 + 0.01 * rng.random((S, S, 3))).astype(np.float32)
    assert C.soft_edge(faint).max() < 0.3


def test_lineart_draws_on_the_dark_side_of_edges():
    line = C.lineart(_square(colour=(1.0, 1.0, 1.0)))[..., 0]
    d = _dist_to_outline()
    yy, xx = np.mgrid[0:S, 0:S]
    inside = (yy >= 20) & (yy < 44) & (xx >= 20) & (xx < 44)
    drawn = line > 0.3
    assert drawn.sum() > 4 * 20  # the outline is drawn all round
    assert not drawn[inside].any()  # bright side: no line
    assert d[drawn].max() <= 3.0  # lines hug the outline, outside it
    assert line[d > 6].max() < 1e-3


def test_scribble_is_thick_simple_and_on_the_outline():
    s = C.scribble(_square())[..., 0] > 0.5
    d = _dist_to_outline()
    assert d[s].max() <= 4.0 and not s[d > 5].any()
    # thick: across the left side (row 32) the stroke is about 2 * radius + 1 = 5 pixels wide
    width = s[32, :32].sum()
    assert 3 <= width <= 7
    # from a given edge map: an isolated speck is dropped, a long line is kept and dilated
    edges = np.zeros((S, S), np.float32)
    edges[10, 5:50] = 1.0
    edges[40, 40] = 1.0
    out = C.scribble(edges=edges, radius=1)[..., 0] > 0.5
    assert out[9:12, 10:45].all() and not out[38:43, 38:43].any()


def test_mlsd_finds_a_drawn_segment():
    img = np.zeros((S, S, 3), np.float32)
    from skimage.draw import line_aa

    (x0, y0), (x1, y1) = (8, 10), (56, 50)
    rr, cc, val = line_aa(y0, x0, y1, x1)
    for off in (-1, 0, 1):  # a 3-px wide bright line
        img[np.clip(rr + off, 0, S - 1), cc] = np.maximum(img[np.clip(rr + off, 0, S - 1), cc], val[:, None])
    (segs,) = C.line_segments(img[None])
    assert segs.shape[1] == 4 and len(segs) >= 1
    longest = segs[np.argmax(np.hypot(segs[:, 2] - segs[:, 0], segs[:, 3] - segs[:, 1]))]
    ends = longest.reshape(2, 2)
    truth = np.array([[x0, y0], [x1, y1]], np.float32)
    err = min(np.abs(ends - truth).max(), np.abs(ends[::-1] - truth).max())
    assert err <= 4.0
    # the drawing: white along the segment, black far from it
    drawn = C.mlsd_lines(img)[..., 0] > 0.5
    yy, xx = np.mgrid[0:S, 0:S]
    dist = np.abs((y1 - y0) * xx - (x1 - x0) * yy + x1 * y0 - y1 * x0) / np.hypot(x1 - x0, y1 - y0)
    assert drawn.sum() > 40 and dist[drawn].max() <= 4.0
    assert len(C.line_segments(np.full((S, S, 3), 0.3, np.float32))[0]) == 0
    np.testing.assert_array_equal(C.line_segments(img, seed=0)[0], segs)  # deterministic


def test_depth_condition_near_is_bright():
    depth = np.array([[1.0, 2.0, 4.0, 0.0]])  # 0 = no hit (the renderer's background)
    c = C.depth_condition(depth)
    assert c.shape == (1, 4, 3) and c.dtype == np.float32
    np.testing.assert_allclose(c[0, :, 0], [1.0, 1.0 / 3.0, 0.0, 0.0], atol=1e-6)  # 1/d normalised
    # a batch: each image normalised on its own; a mask removes pixels; tensors come back as tensors
    batch = torch.tensor([[[2.0, 3.0]], [[10.0, 20.0]]])
    out = C.depth_condition(batch, mask=torch.tensor([[True, True]]).numpy())
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 2, 3)
    np.testing.assert_allclose(out[..., 0].numpy(), [[[1.0, 0.0]], [[1.0, 0.0]]], atol=1e-6)
    masked = C.depth_condition(np.array([[1.0, 2.0, 4.0]]), mask=np.array([[True, False, True]]))
    np.testing.assert_allclose(masked[0, :, 0], [1.0, 0.0, 0.0], atol=1e-6)
    # a fixed range keeps views comparable: the same depth gives the same value in both images
    fixed = C.depth_condition(np.array([[[2.0, 4.0]], [[2.0, 8.0]]]), near=1.0, far=10.0)
    assert fixed[0, 0, 0, 0] == pytest.approx(fixed[1, 0, 0, 0])
    assert fixed[0, 0, 0, 0] == pytest.approx((0.5 - 0.1) / 0.9, abs=1e-6)
    # depth along a ramp: strictly decreasing brightness with distance
    ramp = C.depth_condition(np.linspace(1.0, 5.0, 9)[None])[0, :, 0]
    assert np.all(np.diff(ramp) < 0)
    np.testing.assert_allclose(C.depth_condition(np.full((2, 2), 3.0))[..., 0], 1.0)


def test_normal_condition_maps_known_planes_to_documented_colours():
    s = 1.0 / np.sqrt(3.0)
    n_cv = np.array(
        [[[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [s, -s, -s], [0.0, 0.0, -5.0], [0.0, 0.0, 0.0]]]
    )  # OpenCV camera frame: facing the camera, right, up, a tilted plane, unnormalised, missing
    c = C.normal_condition(n_cv)
    expected = [
        [0.5, 0.5, 1.0],  # towards the viewer: blue-ish lavender
        [1.0, 0.5, 0.5],  # right: red
        [0.5, 1.0, 0.5],  # up: green
        [(s + 1) / 2, (s + 1) / 2, (s + 1) / 2],
        [0.5, 0.5, 1.0],  # renormalised
        [0.0, 0.0, 0.0],  # zero length: black
    ]
    np.testing.assert_allclose(c[0], expected, atol=1e-6)
    n_gl = n_cv * np.array([1.0, -1.0, -1.0])
    np.testing.assert_allclose(C.normal_condition(n_gl, frame="opengl"), c, atol=1e-6)
    masked = C.normal_condition(n_cv, mask=np.array([[False, True, True, True, True, True]]))
    assert masked[0, 0].tolist() == [0.0, 0.0, 0.0]


def test_segmentation_condition_uses_the_palette():
    labels = np.array([[0, 1, 2], [2, -1, 1]])
    pal = np.array([[10, 20, 30], [255, 0, 0], [0, 128, 255]], np.uint8)
    c = C.segmentation_condition(labels, palette=pal)
    for (i, j), lab in np.ndenumerate(labels):
        want = [0.0, 0.0, 0.0] if lab < 0 else (pal[lab] / 255.0).tolist()
        np.testing.assert_allclose(c[i, j], want, atol=1e-6)
    default = C.default_palette(256)
    assert len({tuple(row) for row in (default * 255).round().astype(int).tolist()}) == 256  # all distinct
    d = C.segmentation_condition(torch.tensor([[[3, 7]]]))
    assert isinstance(d, torch.Tensor) and d.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(d[0, 0].numpy(), default[[3, 7]], atol=1e-6)


def _stick_figure() -> np.ndarray:
    """COCO-18 keypoints ``[18, 3]`` (x, y, confidence) of a spread-out figure in a 128 x 128 image."""
    k = np.zeros((18, 3))
    k[:, 2] = 1.0
    pts = {
        0: (64, 20), 1: (64, 40), 2: (40, 42), 3: (24, 62), 4: (14, 84), 5: (88, 42), 6: (104, 62),
        7: (114, 84), 8: (50, 80), 9: (46, 100), 10: (44, 122), 11: (78, 80), 12: (82, 100), 13: (84, 122),
        14: (58, 14), 15: (70, 14), 16: (52, 18), 17: (76, 18),
    }  # fmt: skip
    for j, (x, y) in pts.items():
        k[j, :2] = (x, y)
    return k


def test_pose_condition_draws_openpose_limbs_between_the_right_joints():
    k = _stick_figure()
    c = C.pose_condition(k[None], 128, 128)
    assert c.shape == (128, 128, 3) and c.dtype == np.float32
    colours = np.array(C.OPENPOSE_COLORS) / 255.0
    for i, (a, b) in enumerate(C.OPENPOSE_LIMBS):
        mx, my = np.round((k[a, :2] + k[b, :2]) / 2).astype(int)
        np.testing.assert_allclose(c[my, mx], 0.6 * colours[i], atol=1e-6, err_msg=f"limb {i} ({a}-{b})")
    for j in range(18):
        x, y = k[j, :2].astype(int)
        np.testing.assert_allclose(c[y, x], colours[j], atol=1e-6, err_msg=f"joint {j}")
    assert (c.sum(-1) == 0).mean() > 0.8  # a black background
    # a joint below the confidence threshold disappears with its limbs
    k2 = k.copy()
    k2[3, 2] = 0.1  # right elbow
    c2 = C.pose_condition(k2, 128, 128)
    for a, b in [(2, 3), (3, 4)]:
        mx, my = np.round((k[a, :2] + k[b, :2]) / 2).astype(int)
        assert c2[my, mx].sum() == 0.0
    assert c2[int(k[3, 1]), int(k[3, 0])].sum() == 0.0
    # two people, [18, 2] without confidences, a tensor in -> a tensor out
    both = C.pose_condition(torch.tensor(np.stack([k[:, :2], k[:, :2] * 0.5])), 128, 128)
    assert isinstance(both, torch.Tensor) and both.shape == (128, 128, 3)


def test_palette_condition_reproduces_a_two_colour_image():
    img = np.zeros((S, S, 3), np.float32)
    img[:, :32] = (0.9, 0.1, 0.2)
    img[:, 32:] = (0.1, 0.3, 0.8)
    out = C.palette_condition(img, cells=8)
    np.testing.assert_allclose(out, img, atol=1e-6)
    # cells that straddle the boundary hold the mean; everything is constant per cell
    coarse = C.palette_condition(img, cells=3)
    assert len(np.unique(coarse.reshape(-1, 3), axis=0)) == 3
    middle = (np.arange(S) * 3) // S == 1  # columns 22..42
    np.testing.assert_allclose(coarse[0, 30], img[:, middle].astype(np.float64).mean(axis=(0, 1)), atol=1e-6)
    # cells beyond the image size are clamped to it
    np.testing.assert_allclose(C.palette_condition(img[:4, 30:34], cells=100), img[:4, 30:34], atol=1e-6)


def test_bad_inputs_name_the_argument():
    img = _square()
    cases = [
        (lambda: C.canny(img[..., :2]), r"canny: image: expected an RGB image"),
        (lambda: C.canny(img * 2), r"canny: image: float images must lie in \[0, 1\]"),
        (lambda: C.soft_edge(np.full((4, 4, 3), np.nan, np.float32)), r"soft_edge: image: non-finite"),
        (lambda: C.lineart(img.astype(np.int32)), r"lineart: image: expected float in \[0, 1\] or uint8"),
        (lambda: C.canny(img, low=0.3, high=0.2), r"canny: low"),
        (lambda: C.canny(img, channels="hsv"), r"canny: channels"),
        (lambda: C.soft_edge(img, sigmas=()), r"soft_edge: sigmas"),
        (lambda: C.lineart(img, k=1.0), r"lineart: k"),
        (lambda: C.scribble(), r"scribble: give image or edges"),
        (lambda: C.scribble(img, threshold=2.0), r"scribble: threshold"),
        (lambda: C.mlsd_lines(img, thickness=0), r"mlsd_lines: thickness"),
        (lambda: C.line_segments(img, min_length=1), r"line_segments: min_length"),
        (lambda: C.depth_condition(np.zeros((2, 2, 2, 2))), r"depth_condition: depth: expected depth map"),
        (lambda: C.depth_condition(np.ones((2, 3)), mask=np.ones((3, 2), bool)), r"depth_condition: mask"),
        (lambda: C.depth_condition(np.ones((2, 3)), mask=np.ones((2, 3))), r"depth_condition: mask: expected a boolean"),
        (lambda: C.depth_condition(np.ones((2, 3)), near=1.0), r"depth_condition: give both near and far"),
        (lambda: C.depth_condition(np.ones((2, 3)), near=2.0, far=1.0), r"depth_condition: far"),
        (lambda: C.normal_condition(np.zeros((4, 4, 2))), r"normal_condition: normals_cam"),
        (lambda: C.normal_condition(np.zeros((4, 4, 3)), frame="blender"), r"normal_condition: frame"),
        (lambda: C.segmentation_condition(np.zeros((2, 2))), r"segmentation_condition: labels: expected integer"),
        (lambda: C.segmentation_condition(np.array([[0, 3]]), palette=np.zeros((3, 3))), r"class id 3 but the palette"),
        (lambda: C.segmentation_condition(np.array([[0]]), palette=np.zeros((3, 4))), r"segmentation_condition: palette"),
        (lambda: C.pose_condition(np.zeros((1, 17, 2)), 8, 8), r"pose_condition: keypoints: expected \[P, 18, 2\]"),
        (lambda: C.pose_condition(np.zeros((1, 18, 2)), 0, 8), r"pose_condition: height"),
        (lambda: C.palette_condition(img, cells=0), r"palette_condition: cells"),
    ]
    for call, match in cases:
        with pytest.raises(InputError, match=match):
            call()


def test_docstring_examples_and_lazy_exports():
    result = doctest.testmod(C, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0
    assert generation.canny is C.canny and generation.pose_condition is C.pose_condition
    assert generation.load_hed.__module__ == "langfield.generation.hed"


def test_hed_edges_condition():
    from langfield.generation.hed import HED, default_hed_weights

    img = _square()
    tiny = HED((2, 2, 2, 2, 2)).eval()
    out = C.hed_edges(torch.from_numpy(img), model=tiny)
    assert isinstance(out, torch.Tensor) and out.shape == (S, S, 3) and 0 <= float(out.min()) <= float(out.max()) <= 1
    try:
        default_hed_weights()
    except FileNotFoundError as exc:
        pytest.skip(f"real HED weights not installed ({exc})")
    e = C.hed_edges(np.stack([img, img]))[..., 0]  # the cached BSDS500 model
    d = _dist_to_outline()
    assert e.shape == (2, S, S)
    assert e[:, d <= 1].mean() > 0.5 and e[:, d > 6].mean() < 0.1
    assert C._cached_hed.cache_info().currsize == 1
    # scribble from the HED map: thick strokes on the outline only
    strokes = C.scribble(edges=e[0])[..., 0] > 0.5
    assert strokes[d <= 1].mean() > 0.8 and not strokes[d > 5].any()
