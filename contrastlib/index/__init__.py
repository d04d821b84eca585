"""The FAISS index layer shared by mining, samplers, retrieval evaluation and kNN monitors."""

from contrastlib.index.faiss_index import KINDS, IndexSpec, VectorIndex, l2_normalise
from contrastlib.index.gpu import gpu_available, gpu_usable

__all__ = ["KINDS", "IndexSpec", "VectorIndex", "gpu_available", "gpu_usable", "l2_normalise"]
