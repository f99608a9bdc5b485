"""Sparse-autoencoder and transcoder latents, encoded exactly as each format's authors do (see `formats`)."""

from .encoders import Encoder
from .formats import FORMATS, load_autoencoder

__all__ = ["FORMATS", "Encoder", "load_autoencoder"]
