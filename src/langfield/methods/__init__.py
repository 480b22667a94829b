"""Reconstruction methods: one file per method, each an ``XConfig`` dataclass beside ``X``.

Methods register themselves in :data:`langfield.methods.registry.METHODS` (a plain dict).
"""
