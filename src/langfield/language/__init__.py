"""Language fields: CLIP-family encoders, mask proposals, dense features and open-vocabulary queries.

Import the submodules directly, e.g. ``from langfield.language.encoders import load_encoder``;
this package file deliberately imports nothing so optional dependencies (``transformers``,
``open_clip``) are only loaded by the modules that need them.
"""
