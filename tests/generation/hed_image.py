"""The deterministic test image of the HED reference (numpy only: the script that made the Keras
reference, ``data/make_hed_keras_reference.py``, imports it without langfield or torch)."""

import numpy as np


def reference_image(h: int = 44, w: int = 36) -> np.ndarray:
    """``[h, w, 3]`` float32 in [0, 1]: a colour gradient with a red disc, a blue box and a green
    triangle (asymmetric, so transposed kernels or swapped channels change the edges)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([0.35 + 0.3 * xx / w, 0.4 + 0.2 * yy / h, 0.55 - 0.2 * xx / w], -1)
    img[(yy - 12.0) ** 2 + (xx - 11.0) ** 2 <= 7.5**2] = (0.9, 0.15, 0.1)
    img[(yy >= 24) & (yy <= 38) & (xx >= 5) & (xx <= 15)] = (0.1, 0.2, 0.85)
    img[(yy >= 18) & (yy <= 40) & (xx >= 20) & (xx - 20 <= (yy - 18) * 0.6)] = (0.15, 0.8, 0.2)
    return img.astype(np.float32)
