"""Trainer objectives of the generation stack (``Method`` subclasses, not scene methods): the
instruments (:mod:`~langfield.methods.diffusion.instrument`) and the diffusion models."""
