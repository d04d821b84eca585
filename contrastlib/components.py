"""Import every room that registers components, so the registries are complete."""

from contrastlib import encoders, losses, methods, samplers  # noqa: F401
