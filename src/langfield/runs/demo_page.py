"""The ``langfield demo`` page: one self-contained static HTML file over the demo's output folder.

:func:`render_demo_page` is a pure function of the summary that :func:`langfield.runs.demo.run_demo`
writes (``summary.json``): every text is escaped with :func:`html.escape`, every image and video is a
relative link into the output folder, and nothing is fetched from elsewhere (no external CSS, JS,
fonts or CDN), so the folder can be copied, zipped or opened from disk (``file://``).

>>> page = render_demo_page({"title": "a <demo>", "views": [{"name": "r_0", "compare": "renders/r_0.png"}]})
>>> "a &lt;demo&gt;" in page and 'src="renders/r_0.png"' in page
True
>>> sorted(page_files({"views": [{"compare": "a.png", "depth": "b.png"}], "videos": ["orbit.mp4"]}))
['a.png', 'b.png', 'orbit.mp4']
"""

from __future__ import annotations

import html
import shlex
from pathlib import PurePosixPath
from typing import Any, Iterable, List, Mapping, Optional, Sequence

__all__ = ["DEMO_PAGE", "check_relative_link", "page_files", "render_demo_page"]

#: The page's file name inside the demo's output folder.
DEMO_PAGE = "index.html"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1rem 1.5rem 3rem; color: #1d1d1f; background: #fafafa; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.sub { color: #555; margin-top: 0; }
figure { display: inline-block; margin: .4rem .6rem .8rem 0; vertical-align: top; }
figure img, figure video { display: block; image-rendering: auto; border: 1px solid #ccc; background: #fff; }
figcaption { font-size: .85rem; color: #444; max-width: 520px; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; font-size: .92rem; }
th { background: #f0f0f0; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .88rem; }
pre { background: #1e1e1e; color: #eaeaea; padding: .8rem 1rem; overflow-x: auto; border-radius: 4px; }
.warn { background: #fff4d6; border: 1px solid #e8c66a; padding: .5rem .8rem; border-radius: 4px; }
.query { font-weight: 600; }
"""


def check_relative_link(path: str) -> str:
    """``path`` if it is a relative POSIX path inside the output folder, else ``ValueError``.

    >>> check_relative_link("renders/test/r_0.png")
    'renders/test/r_0.png'
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"demo page: a link must be a non-empty relative path, got {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute() or "\\" in path or ":" in path or ".." in p.parts:
        raise ValueError(f"demo page: links must stay inside the output folder (relative, no '..'), got {path!r}")
    return path


def _views(summary: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    return list(summary.get("views") or [])


def _language(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    return summary.get("language") or {}


def page_files(summary: Mapping[str, Any]) -> List[str]:
    """Every file (relative to the output folder) that :func:`render_demo_page` links to."""
    files: List[str] = []
    for view in _views(summary):
        files += [view[k] for k in ("compare", "render", "depth") if view.get(k)]
    files += list(summary.get("videos") or [])
    lang = _language(summary)
    for q in lang.get("queries") or []:
        files += [q[k] for k in ("render", "relevancy", "mask") if q.get(k)]
    seg = lang.get("segmentation") or {}
    files += [seg[k] for k in ("image", "ground_truth") if seg.get(k)]
    if (lang.get("objects") or {}).get("image"):
        files.append(lang["objects"]["image"])
    files += [f for f in summary.get("files") or [] if f]
    return [check_relative_link(f) for f in files]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, fmt: str, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def _img(path: str, alt: str, height: Optional[int] = None) -> str:
    """An image shown ``height`` px high (its width follows its aspect ratio): the demo's small
    renders are enlarged so a newcomer can see them."""
    h = f' height="{int(height)}"' if height else ""
    return f'<img src="{_e(check_relative_link(path))}" alt="{_e(alt)}"{h}>'


def _figure(path: str, caption: str, height: Optional[int] = None) -> str:
    return f"<figure>{_img(path, caption, height)}<figcaption>{_e(caption)}</figcaption></figure>"


def _zoom(side: int) -> int:
    """Display height of a ``side``-pixel image: doubled up to 256 px, never shrunk."""
    return max(side, min(2 * side, 256))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table; cells are already-escaped HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _reconstruction(summary: Mapping[str, Any]) -> List[str]:
    scene = summary.get("scene") or {}
    recon = summary.get("recon") or {}
    width = int(scene.get("width") or 128)
    show = _zoom(int(scene.get("height") or width))
    out = ["<h2>1. Reconstruct</h2>"]
    out.append(
        f"<p>{_e(recon.get('method_name', recon.get('method', 'the method')))} trained for "
        f"{_num(recon.get('train_seconds'), '.0f', ' s')} ({_e(recon.get('steps', 'n/a'))} steps) on "
        f"{_e(scene.get('train_views', 'n/a'))} views of the procedural scene ({width}x{_e(scene.get('height', width))} px). "
        f"Below: held-out test views the method never saw, rendered beside the ground truth and the rendered depth.</p>"
    )
    rows = [
        ["test PSNR", _num(recon.get("test_psnr"), ".2f", " dB"), "render vs ground-truth image, mean over the test views (higher is better)"],
        ["test SSIM", _num(recon.get("test_ssim"), ".4f"), "structural similarity vs ground truth, 1 = identical"],
        ["depth error", _num(recon.get("test_depth_mae"), ".4f"),
         "mean absolute error of the rendered depth vs the scene's analytic depth (scene units; the object is about 1 unit across)"],
        ["render speed", _num(recon.get("render_fps"), ".1f", " images/s"), f"test views at {width} px on this machine"],
    ]  # fmt: skip
    if recon.get("num_gaussians"):
        rows.append(["Gaussians", _e(recon["num_gaussians"]), "size of the final cloud"])
    out.append(_table(["metric", "value", "compared with"], rows))
    for view in _views(summary):
        cap = f"test view {view.get('name', '')}: render | ground truth | depth"
        if view.get("psnr") is not None:
            cap += f" ({_num(view.get('psnr'), '.2f', ' dB')})"
        if view.get("compare"):
            out.append(_figure(view["compare"], cap, height=show))
    videos = list(summary.get("videos") or [])
    if videos:
        out.append("<h3>Orbit</h3>")
        for v in videos:
            src = _e(check_relative_link(v))
            out.append(
                f'<figure><video src="{src}" height="{show}" controls autoplay loop muted '
                f'playsinline><a href="{src}">{src}</a></video><figcaption>{src}</figcaption></figure>'
            )
    return out


def _ask(summary: Mapping[str, Any]) -> List[str]:
    lang = _language(summary)
    if not lang:
        return []
    scene = summary.get("scene") or {}
    show = _zoom(int(scene.get("height") or scene.get("width") or 128))
    out = ["<h2>2. Ask</h2>"]
    if lang.get("skipped"):
        out.append(f'<p class="warn"><strong>Skipped:</strong> {_e(lang["skipped"])}</p>')
        out.append("<p>Install the simulated teacher's text model (<code>pip install -e \".[semantics]\"</code>, "
                   "no download at run time) and run <code>langfield demo</code> again to see a language field answer "
                   "queries here.</p>")  # fmt: skip
        return out
    if lang.get("simulated"):
        out.append(
            '<p class="warn"><strong>SIMULATED teacher.</strong> No CLIP weights are downloaded by the demo: the 2D '
            "teacher is simulated from the scene's ground-truth labels (each pixel gets the text embedding of its "
            "label, blurred, mixed, swapped between similar labels and noised the way CLIP's dense features are). "
            "The 3D language field, the queries and the metrics below are the real ones; with a CLIP model "
            "(<code>--teacher openai/clip-vit-base-patch16</code>) the same steps run unchanged.</p>"
        )
    out.append(
        f"<p>Teacher: <code>{_e(lang.get('teacher', 'n/a'))}</code>; field variant {_e(lang.get('variant', 'n/a'))}, "
        f"distilled in {_num(lang.get('seconds'), '.0f', ' s')} on the frozen reconstruction.</p>"
    )
    metrics = lang.get("metrics") or {}
    if metrics:
        rows = []
        for name, key in (("3D language field (rendered)", "field"), ("SIMULATED 2D teacher alone (per view)", "teacher")):
            m = metrics.get(key) or {}
            rows.append([_e(name), _num(m.get("miou"), ".3f"), _num(m.get("macc"), ".3f"), _num(m.get("loc_acc"), ".3f")])
        out.append(f"<p>Segmentation of the {_e(metrics.get('num_views', ''))} test views over the scene's labels, "
                   "scored against the ground-truth label maps:</p>")  # fmt: skip
        out.append(_table(["features", "mIoU", "mAcc", "localisation acc."], rows))
    for q in lang.get("queries") or []:
        out.append(f'<h3>Query: <span class="query">&ldquo;{_e(q.get("text", ""))}&rdquo;</span></h3>')
        if q.get("render"):
            out.append(_figure(q["render"], "render", height=show))
        if q.get("relevancy"):
            cap = f"relevancy of \u201c{q.get('text', '')}\u201d (max {_num(q.get('max'), '.2f')})"
            out.append(_figure(q["relevancy"], cap, height=show))
        if q.get("mask"):
            cap = f"segmented: pixels labelled \u201c{q.get('text', '')}\u201d ({_num(q.get('share'), '.1%')} of the image)"
            out.append(_figure(q["mask"], cap, height=show))
    seg = lang.get("segmentation") or {}
    if seg:
        labels = ", ".join(seg.get("labels") or [])
        out.append(f"<h3>Segmentation over the labels: {_e(labels)}</h3>")
        if seg.get("image"):
            out.append(_figure(seg["image"], "language field: each pixel gets its closest label", height=show))
        if seg.get("ground_truth"):
            out.append(_figure(seg["ground_truth"], "ground-truth labels of the same view", height=show))
    ans = lang.get("answer") or {}
    if ans:
        out.append(f"<h3>Spatial question: &ldquo;{_e(ans.get('question', ''))}&rdquo;</h3>")
        line = f"<p>Answer: <strong>{_e(ans.get('answer', 'n/a'))}</strong> (confidence {_num(ans.get('confidence'), '.2f')})"
        if ans.get("ground_truth") is not None:
            line += f"; from the ground-truth label map: {_e(ans['ground_truth'])}"
        out.append(line + ". Each name is placed on the scene's object map (objects grouped from the reconstruction's "
                   "geometry, then named with the labels), then compared in this camera.</p>")
    objects = lang.get("objects") or {}
    if objects.get("image"):
        out.append("<h3>Object map</h3>")
        cap = ("objects grouped from the geometry of 12 training views and named with the labels "
               f"({', '.join(objects.get('names') or [])}); * = named by elimination")
        out.append(_figure(objects["image"], cap, height=show))
    return out


def _commands(summary: Mapping[str, Any]) -> List[str]:
    out_dir = shlex.quote(str(summary.get("output_dir") or "outputs/demo"))
    cmds = [
        ("Ask this scene more questions", [f'langfield query {out_dir} --text cylinder --localize',
                                          f'langfield query {out_dir} --ask "which is closer, the sphere or the box?" --view 2']),
        ("Look around it live in the browser (pip install -e \".[viewer]\")", [f"langfield view {out_dir}"]),
        ("Train on a real scene (NeRF-synthetic lego, or any transforms.json / LLFF / COLMAP folder)", [
            "langfield train --data ../shared/data/nerf_synthetic/lego --downscale 4 --method gaussians --max-seconds 900 --output-dir outputs/lego_gs",
            "langfield render outputs/lego_gs --path orbit",
        ]),
        ("Capture your own photos or a video (pip install -e \".[capture]\")", [
            "langfield capture path/to/photos --output scenes/mine",
            "langfield train --data scenes/mine/undistorted --method gaussians --output-dir outputs/mine",
        ]),
        ("Language with a real CLIP model", [
            "langfield language outputs/lego_gs --teacher openai/clip-vit-base-patch16",
            'langfield query outputs/lego_gs --text "bulldozer blade"',
        ]),
        ("Generate: train the small toy-world diffusion models (no download), then sample; any diffusers "
         "pipeline folder or hub id works too (pip install -e \".[generation]\"); DIR is a pipeline folder the first command prints", [
            "langfield toyworld train --preset smoke",
            'langfield generate --model DIR --prompt "a sphere" --rewrite-scene ' + out_dir + " --rewrite-objects sphere,box",
        ]),
    ]  # fmt: skip
    out = ["<h2>3. Go further</h2>"]
    for title, lines in cmds:
        out.append(f"<p>{_e(title)}:</p><pre>{_e(chr(10).join(lines))}</pre>")
    out.append("<p>Every command explains its options: <code>langfield COMMAND --help</code>.</p>")
    return out


def _machine(summary: Mapping[str, Any]) -> List[str]:
    run = summary.get("run") or {}
    rows = [
        ["total time", _num(run.get("total_seconds"), ".0f", " s")],
        ["reconstruction budget", _num(run.get("budget_s"), ".0f", " s")],
    ]
    for key, name in (("recon_seconds", "  reconstruction"), ("render_seconds", "  test renders + orbit video"),
                      ("language_seconds", "  language field"), ("query_seconds", "  queries + metrics")):  # fmt: skip
        if run.get(key) is not None:
            rows.append([_e(name), _num(run[key], ".0f", " s")])
    for key in ("device", "threads", "cpus", "platform", "processor", "torch", "langfield", "date"):
        if run.get(key) not in (None, ""):
            rows.append([_e(key), _e(run[key])])
    return ["<h2>Budget and machine</h2>", _table(["step / machine", "value"], rows)]


def render_demo_page(summary: Mapping[str, Any]) -> str:
    """The demo page (HTML) for ``summary``; every text escaped, every link relative and checked.

    ``summary`` keys (all optional): ``title``, ``output_dir`` (shown in commands), ``scene``
    (``width``, ``height``, ``train_views``, ``labels``), ``recon`` (``method``, ``steps``,
    ``train_seconds``, ``test_psnr``, ``test_ssim``, ``test_depth_mae``, ``render_fps``),
    ``views`` (``name``, ``compare`` (render | GT | depth), ``psnr``), ``videos``, ``language``
    (``teacher``, ``simulated``, ``variant``, ``seconds``, ``metrics``, ``queries`` (``text``,
    ``render``, ``relevancy``, ``mask``, ``max``, ``share``), ``segmentation`` (``labels``,
    ``image``, ``ground_truth``), ``answer``), ``run`` (times and machine). File values are paths
    relative to the page (``ValueError`` otherwise).
    """
    title = str(summary.get("title") or "langfield demo")
    parts: List[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        '<p class="sub">Neural 3D scenes that meet vision-language models: this page was written by '
        "<code>langfield demo</code> on this machine, from a built-in procedural scene (nothing downloaded). "
        "It reconstructs the scene from posed images, then distils a language field into it and asks it "
        "where things are.</p>",
    ]
    parts += _reconstruction(summary)
    parts += _ask(summary)
    parts += _commands(summary)
    parts += _machine(summary)
    parts.append("</body></html>\n")
    return "\n".join(parts)
