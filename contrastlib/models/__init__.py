"""Inference models that the verbs load (``score``, ``eval``): a method's trained parts
put together, below the CLI and beside the methods."""
