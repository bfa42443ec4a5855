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


def project(X: np.ndarray, method: str = "PCA", dims: int = 2, neighbours: int = 15, seed: int = 0,
            fit_on: np.ndarray | None = None) -> np.ndarray:
    """(N, C) -> (N, dims). `neighbours` is t-SNE's perplexity or UMAP's n_neighbors. fit_on (N,) bool: PCA's
    directions from those points only (every point is still projected), so a far outlier does not take an axis."""
    X = np.asarray(X, dtype=np.float32)
    N = X.shape[0]
    if N < 3:
        raise InputError("a projection needs at least 3 points")
    if method == "PCA":
        fit = X if fit_on is None else X[fit_on]
        return PCA(n_components=min(dims, len(fit), X.shape[1]), random_state=seed).fit(fit).transform(X)
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


def outliers(X: np.ndarray, factor: float = 20.0) -> np.ndarray:
    """(N,) bool: the vectors more than `factor` times longer than the median vector. In LLMs' residual streams
    these are the massive activations of the first token (the attention sink: SmolLM2's is ~10,000 long from
    layer 11 up, where the others are ~100)."""
    lengths = np.linalg.norm(np.asarray(X, dtype=np.float32), axis=-1)
    return lengths > factor * np.median(lengths)


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
