"""Captures: photos or a video -> pycolmap -> a COLMAP scene folder the ``colmap`` reader loads.

``langfield capture INPUT --output DIR`` is :func:`capture` with a :class:`CaptureConfig`. pycolmap
is optional (``pip install -e '.[capture]'``) and runs in a child process
(:mod:`langfield.capture.sfm`); everything else here -- frame selection (:mod:`.frames`), the
largest-model choice and the written files (:mod:`.model`), the suspicious-camera checks
(:mod:`.quality`) -- is numpy and testable without it. This package sits in the ``data`` row of the
layer table and may not import ``data``: it writes files the readers load.
"""

from langfield.capture.frames import extract_video_frames, laplacian_variance, list_photos, select_sharpest
from langfield.capture.model import add_image, choose_largest_model, remove_images, transforms_dict, write_transforms_json
from langfield.capture.pipeline import CaptureConfig, CaptureResult, capture, check_registration
from langfield.capture.quality import (
    CameraCheckConfig,
    ImageStats,
    PairRotation,
    SuspiciousCamera,
    find_suspicious_cameras,
    image_statistics,
    model_statistics,
    pair_disagreements,
)
from langfield.capture.sfm import CaptureError, choose_matcher, require_pycolmap

__all__ = [
    "add_image",
    "CameraCheckConfig",
    "CaptureConfig",
    "CaptureError",
    "CaptureResult",
    "ImageStats",
    "PairRotation",
    "SuspiciousCamera",
    "capture",
    "check_registration",
    "choose_largest_model",
    "choose_matcher",
    "extract_video_frames",
    "find_suspicious_cameras",
    "image_statistics",
    "laplacian_variance",
    "list_photos",
    "model_statistics",
    "pair_disagreements",
    "remove_images",
    "require_pycolmap",
    "select_sharpest",
    "transforms_dict",
    "write_transforms_json",
]
