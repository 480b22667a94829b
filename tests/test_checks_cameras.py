"""_checks camera helpers: image sizes and pinhole intrinsics that are plausible, or refused naming the field."""

from __future__ import annotations

import pytest

from langfield._checks import MAX_IMAGE_SIDE, InputError, check_image_size, check_pinhole


def test_check_image_size():
    assert check_image_size(8, 6.0, "a.png") == (8, 6)
    assert check_image_size(MAX_IMAGE_SIDE, 1, "a.png") == (MAX_IMAGE_SIDE, 1)
    for w, h, message in [
        (0, 6, r"^a\.png: width: must be >= 1, got 0"),
        (8, -1, r"^a\.png: height: must be >= 1, got -1"),
        (MAX_IMAGE_SIDE + 1, 6, r"^a\.png: width: must be <= 131072"),
        (8.5, 6, r"^a\.png: width: expected an integer, got 8\.5"),
        (True, 6, r"^a\.png: width: expected an integer, got True"),
    ]:
        with pytest.raises(InputError, match=message):
            check_image_size(w, h, "a.png")


def test_check_pinhole():
    check_pinhole(7.0, 7.0, 4.0, 3.0, 8, 6, "cam")
    check_pinhole(7.0, 7.0, -8.0, 12.0, 8, 6, "cam")  # the principal point may sit one image size outside
    for args, message in [
        ((0.0, 7.0, 4.0, 3.0), r"^cam: focal length fx: must be > 0"),
        ((7.0, float("nan"), 4.0, 3.0), r"^cam: focal length fy: must be finite"),
        ((2e7, 7.0, 4.0, 3.0), r"^cam: focal length fx: must be <= 1e\+07"),
        ((7.0, 7.0, 16.5, 3.0), r"^cam: principal point cx \(image width 8\): must be <= 16"),
        ((7.0, 7.0, 4.0, -6.5), r"^cam: principal point cy \(image height 6\): must be >= -6"),
        ((7.0, 7.0, "4", 3.0), r"^cam: principal point cx .*expected a number, got '4'"),
    ]:
        with pytest.raises(InputError, match=message):
            check_pinhole(*args, 8, 6, "cam")
