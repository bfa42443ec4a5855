"""Project many vectors to 2 or 3 dimensions for a picture: PCA, t-SNE or UMAP.

PCA keeps the directions of largest variance (linear, fast, distances mean something);
t-SNE and UMAP keep neighbourhoods (non-linear; clusters are real, distances between
clusters are not). All three are seeded so the same input gives the same picture.
"""
from __future__ import annotations

import threading

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from core.inputs import InputError

METHODS = ("PCA", "t-SNE", "UMAP")


def project(X: np.ndarray, method: str = "PCA", dims: int = 2, neighbours: int = 15, seed: int = 0) -> np.ndarray:
    """(N, C) -> (N, dims). `neighbours` is t-SNE's perplexity or UMAP's n_neighbors."""
    X = np.asarray(X, dtype=np.float32)
    N = X.shape[0]
    if N < 3:
        raise InputError("a projection needs at least 3 points")
    if method == "PCA":
        return PCA(n_components=min(dims, N, X.shape[1]), random_state=seed).fit_transform(X)
    if method == "t-SNE":
        return TSNE(n_components=dims, perplexity=float(min(neighbours, N - 1)), init="pca",
                    random_state=seed).fit_transform(X)
    if method == "UMAP":
        if not _umap_ready.is_set():
            with _umap_first:  # one thread imports umap and numba compiles its code: two at once can deadlock
                fitted = _umap(X, dims, neighbours, seed)
                _umap_ready.set()
                return fitted
        return _umap(X, dims, neighbours, seed)
    raise InputError(f"unknown projection {method!r}; choose one of {', '.join(METHODS)}")


def _umap(X: np.ndarray, dims: int, neighbours: int, seed: int) -> np.ndarray:
    import umap
    return umap.UMAP(n_components=dims, n_neighbors=int(min(max(neighbours, 2), X.shape[0] - 1)),
                     random_state=seed, n_jobs=1).fit_transform(X)


_umap_first, _umap_ready = threading.Lock(), threading.Event()


def warm_umap() -> None:
    """UMAP's first fit compiles numba code (seconds of CPU, see the README): the server does it at start."""
    project(np.random.default_rng(0).normal(size=(40, 8)), "UMAP")


def umap_ready() -> bool:
    return _umap_ready.is_set()
