"""Reconstruction methods: one module per method (a package when it has parts, e.g. ``gaussians/``
with its densification ``strategy/``), each an ``XConfig`` dataclass beside ``X``.

Methods register themselves in :data:`langfield.methods.registry.METHODS` (a plain dict).
"""
