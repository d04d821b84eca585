"""contrastlib: contrastive representation learning and embedding reward models on Lightning."""

__version__ = "0.1.0"
