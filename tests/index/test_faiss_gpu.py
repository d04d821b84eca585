"""faiss-gpu through the index layer: each GPU kind returns what the CPU index returns,
``auto`` picks the GPU, and an index saved from the GPU loads on the CPU. Skipped where
faiss-gpu, a CUDA device or FAISS kernels for that device are missing (CI; the H200 with
the faiss-gpu-cu12 wheel, whose kernels abort there); run on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest

from contrastlib.index import IndexSpec, VectorIndex, gpu_usable

pytestmark = pytest.mark.skipif(not gpu_usable()[0], reason=f"needs working faiss-gpu: {gpu_usable()[1]}")
DIM = 64


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("spec", [IndexSpec("flat"), IndexSpec("ivf_flat", nlist=32, nprobe=32)],
                         ids=["flat", "ivf_flat-all-cells"])
def test_gpu_search_equals_cpu(spec):
    corpus, queries = unit(20_000, 0), unit(500, 1)
    cpu, gpu = VectorIndex(DIM, spec, use_gpu=False), VectorIndex(DIM, spec, use_gpu=True)
    assert gpu.on_gpu and not cpu.on_gpu
    for index in (cpu, gpu):
        if spec.trained:
            index.train(corpus)
        index.add(corpus, batch_size=7_000)
    s_cpu, i_cpu = cpu.search(queries, 10, batch_size=128)
    s_gpu, i_gpu = gpu.search(queries, 10, batch_size=128)
    np.testing.assert_allclose(s_gpu, s_cpu, atol=1e-4)
    # ids agree except where two scores tie to within float error
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_gpu, i_cpu, strict=True)])
    assert agree >= 0.999


def test_auto_uses_gpu_and_saved_gpu_index_loads_on_cpu(tmp_path):
    corpus, queries = unit(5_000, 2), unit(50, 3)
    index = VectorIndex(DIM, IndexSpec("flat"))
    assert index.on_gpu
    index.add(corpus)
    path = index.save(tmp_path / "gpu.faiss")
    loaded = VectorIndex.load(path, use_gpu=False)
    assert not loaded.on_gpu and loaded.ntotal == 5_000
    np.testing.assert_allclose(loaded.search(queries, 5)[0], index.search(queries, 5)[0], atol=1e-4)
