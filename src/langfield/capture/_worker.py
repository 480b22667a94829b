"""The pycolmap side of a capture: ``python langfield/capture/_worker.py REQUEST.json``.

It runs in its own process because pycolmap (COLMAP's C++) can abort the whole process (a failed
check, an attempted download of a vocabulary tree while offline); :mod:`langfield.capture.sfm`
starts it, reads its progress and turns a crash into a clear error. It is run as a script (not
imported by ``langfield.capture``) and imports only the standard library, numpy and pycolmap, so a
worker starts in well under a second.

Protocol: the request is a JSON object (written by :func:`langfield.capture.sfm.run_worker`):
``{"task": "sfm" | "relocalize" | "undistort", ...}``. Each stage prints ``@@stage NAME`` and ``@@done NAME
SECONDS`` on stdout; COLMAP's own log goes to stderr. The SfM task writes ``result_path``:
seconds per stage, the models found and the two-view rotations of the best-matched image pairs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _stage(name: str) -> float:
    print(f"@@stage {name}", flush=True)
    return time.perf_counter()


def _done(name: str, t0: float, seconds: dict) -> None:
    seconds[name] = time.perf_counter() - t0
    print(f"@@done {name} {seconds[name]:.3f}", flush=True)


def _largest(models: dict):
    """The reconstruction with the most registered images (ties: more points, then the lower index):
    the rule of :func:`langfield.capture.model.choose_largest_model` on the written folders."""
    if not models:
        return None
    key = max(models, key=lambda k: (models[k].num_reg_images(), models[k].num_points3D(), -int(k)))
    return models[key]


def _pair_rotations(pycolmap, database: Path, rec, per_image: int, min_inliers: int) -> list:
    """Two-view rotations (``cam_b_from_cam_a``) of each registered image's ``per_image`` best pairs."""
    registered = {im.image_id: im for im in rec.images.values()}
    db = pycolmap.Database.open(str(database))
    try:
        pair_ids, geoms = db.read_two_view_geometries()
        candidates = []
        for pid, g in zip(pair_ids, geoms):
            a, b = pycolmap.pair_id_to_image_pair(pid)
            n = int(len(g.inlier_matches))
            if a in registered and b in registered and n >= min_inliers:
                candidates.append((n, a, b, g.inlier_matches))
        chosen, count = [], {}
        for n, a, b, matches in sorted(candidates, key=lambda c: -c[0]):
            if count.get(a, 0) >= per_image and count.get(b, 0) >= per_image:
                continue
            count[a], count[b] = count.get(a, 0) + 1, count.get(b, 0) + 1
            chosen.append((n, a, b, matches))
        ransac = pycolmap.RANSACOptions()  # the binding's default argument has max_error = 0, refused
        ransac.max_error = 2.0  # pixels
        ransac.random_seed = 0
        keypoints = {}
        out = []
        for n, a, b, matches in chosen:
            for i in (a, b):
                if i not in keypoints:
                    keypoints[i] = db.read_keypoints(i)[:, :2].astype("float64")
            pa, pb = keypoints[a][matches[:, 0]], keypoints[b][matches[:, 1]]
            ia, ib = registered[a], registered[b]
            est = pycolmap.estimate_relative_pose(ia.camera, pa, ib.camera, pb, ransac)
            if est is None:
                continue
            R = est["cam2_from_cam1"].rotation.matrix()
            out.append({"name_a": ia.name, "name_b": ib.name, "num_inliers": n, "rotation": R.tolist()})
        return out
    finally:
        db.close()


def run_sfm(req: dict) -> None:
    import pycolmap

    seconds: dict = {}
    work = Path(req["work_dir"])
    database = work / "database.db"
    sparse = work / "sparse"
    images = Path(req["image_dir"])
    threads = int(req["num_threads"])
    pycolmap.set_random_seed(int(req["seed"]))
    device = pycolmap.Device.cpu if req["device"] == "cpu" else pycolmap.Device.auto

    t0 = _stage("features")
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = req["camera_model"]
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = threads
    extraction.max_image_size = int(req["max_image_size"])
    extraction.sift.max_num_features = int(req["max_num_features"])
    pycolmap.extract_features(
        database, images, image_names=req["image_names"], camera_mode=pycolmap.CameraMode.SINGLE,
        reader_options=reader, extraction_options=extraction, device=device,
    )  # fmt: skip
    _done("features", t0, seconds)

    t0 = _stage("matching")
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    matcher = req["matcher"]
    if matcher == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = int(req["sequential_overlap"])
        pairing.quadratic_overlap = True
        pairing.num_threads = threads
        if req["vocab_tree"]:  # loop closure: also match each frame with its most similar frames
            pairing.loop_detection = True
            pairing.vocab_tree_path = str(req["vocab_tree"])
        pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing, device=device)
    elif matcher == "exhaustive":
        pycolmap.match_exhaustive(database, matching_options=matching, device=device)
    elif matcher == "vocab_tree":
        pairing = pycolmap.VocabTreePairingOptions()
        pairing.vocab_tree_path = str(req["vocab_tree"])
        pairing.num_threads = threads
        pycolmap.match_vocabtree(database, matching_options=matching, pairing_options=pairing, device=device)
    else:
        raise ValueError(f"unknown matcher {matcher!r}")
    _done("matching", t0, seconds)

    t0 = _stage("mapping")
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = threads
    mapping.random_seed = int(req["seed"])
    models = pycolmap.incremental_mapping(database, images, sparse, options=mapping)
    _done("mapping", t0, seconds)

    t0 = _stage("pairs")
    best = _largest(models)
    pairs = []
    if best is not None and req["pairs_per_image"] > 0:
        pairs = _pair_rotations(pycolmap, database, best, int(req["pairs_per_image"]), int(req["pair_min_inliers"]))
    _done("pairs", t0, seconds)
    result = {
        "seconds": seconds,
        "num_models": len(models),
        "pairs": pairs,
        "pycolmap_version": getattr(pycolmap, "__version__", "unknown"),
    }
    Path(req["result_path"]).write_text(json.dumps(result), encoding="utf-8")


def run_relocalize(req: dict) -> None:
    """Re-estimate the poses of ``req["names"]`` against ``req["model_dir"]`` (which lacks them).

    2D-3D correspondences come only from the verified matches between the image and the model's
    registered images (each keypoint takes the 3D point its match observes); the pose is estimated
    with LO-RANSAC at ``max_error_px`` (COLMAP registers at 12 px) and refined; it is accepted with at
    least ``min_inliers`` inliers and an inlier ratio of ``min_inlier_ratio``."""
    import numpy as np
    import pycolmap

    t0 = _stage("relocalize")
    rec = pycolmap.Reconstruction(req["model_dir"])
    db = pycolmap.Database.open(req["database"])
    out = []
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        options = pycolmap.AbsolutePoseEstimationOptions()
        options.ransac.max_error = float(req["max_error_px"])
        options.ransac.random_seed = 0
        for name in req["names"]:
            qid = ids[name]
            keypoints = db.read_keypoints(qid)[:, :2].astype("float64")
            corr = {}
            for nid, nim in rec.images.items():
                if nid == qid or not db.exists_two_view_geometry(qid, nid):
                    continue
                # Match indices are database keypoint indices: only images whose 2D points are the
                # database's keypoints (not one re-added with its inliers only) can be looked up.
                if len(nim.points2D) != db.read_keypoints(nid).shape[0]:
                    continue
                matches = db.read_two_view_geometry(qid, nid).inlier_matches
                for a, b in matches:
                    p2d = nim.points2D[int(b)]
                    if p2d.has_point3D():
                        corr.setdefault(int(a), int(p2d.point3D_id))
            record = {"name": name, "num_correspondences": len(corr), "ok": False}
            if len(corr) >= int(req["min_inliers"]):
                kp_idx = sorted(corr)
                pts2d = keypoints[kp_idx]
                pts3d = np.array([rec.points3D[corr[k]].xyz for k in kp_idx])
                est = pycolmap.estimate_and_refine_absolute_pose(pts2d, pts3d, rec.cameras[int(req["camera_id"])], options)
                if est is not None:
                    mask = np.asarray(est["inlier_mask"], bool)
                    n = int(mask.sum())
                    record["num_inliers"] = n
                    pose = est["cam_from_world"]
                    ok = n >= int(req["min_inliers"]) and n >= float(req["min_inlier_ratio"]) * len(corr)
                    record.update(
                        ok=ok, rotation=pose.rotation.matrix().tolist(), translation=np.asarray(pose.translation).tolist(),
                        xys=pts2d[mask].tolist(), point3d_ids=[corr[k] for k, m in zip(kp_idx, mask) if m],
                    )  # fmt: skip
            out.append(record)
    finally:
        db.close()
    Path(req["result_path"]).write_text(json.dumps({"images": out}), encoding="utf-8")
    _done("relocalize", t0, {})


def run_undistort(req: dict) -> None:
    import pycolmap

    t0 = _stage("undistort")
    pycolmap.undistort_images(
        req["output_dir"], req["model_dir"], req["image_dir"], num_threads=int(req["num_threads"])
    )
    _done("undistort", t0, {})


def main(argv: list) -> int:
    if len(argv) != 1:
        print("usage: python _worker.py REQUEST.json", file=sys.stderr)
        return 2
    req = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    {"sfm": run_sfm, "relocalize": run_relocalize, "undistort": run_undistort}[req["task"]](req)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
