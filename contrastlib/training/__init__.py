"""Trainer setup, optimizers and (later) gradient cache and callbacks."""
