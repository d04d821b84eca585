"""Encoders shared by every method: text, image, pooling, projection heads."""

from contrastlib.encoders.image import ImageEncoder, ProjectionHead
from contrastlib.encoders.pooling import pool
from contrastlib.encoders.text import TextEncoder, TextEncoderSpec

__all__ = ["ImageEncoder", "ProjectionHead", "TextEncoder", "TextEncoderSpec", "pool"]
