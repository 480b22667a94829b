"""Language fields: mask proposals, dense features, distillation and open-vocabulary queries.

The pretrained 2D models they use (CLIP-family encoders, SAM, the sentence text encoder) live in
:mod:`langfield.pretrained`. Import the submodules directly, e.g.
``from langfield.language.teachers import load_teacher``; this package file
deliberately imports nothing so optional dependencies (``transformers``, ``open_clip``) are only
loaded by the modules that need them.
"""
