"""Retrieval metrics: Recall@K, MAP@R, R-precision and NMI, with a chunked exact kNN.

Every embedding queries every *other* embedding of the same set (leave-one-out), or, when a separate
gallery is given (In-Shop-style protocols), every gallery item; ranked by cosine similarity, or with
``distance="squared_l2"`` by the squared Euclidean distance of the raw (not normalised) rows. The
kNN is exact and runs over chunks of queries, so memory is O(chunk_size * M + M * D) for a gallery
of M (M = N leave-one-out), never N x M. Inputs may be NumPy arrays or torch tensors on any device.
Definitions (stated in PROTOCOL.md, "Retrieval metrics"):

* ranking: descending similarity, ties broken by the lower item index, so results do not depend on
  the kNN backend, the chunk size or the thread count. Similarity: ``"cosine"`` (default), or
  ``"squared_l2"``: ``-||q - g||^2`` on the raw embeddings (ascending squared distance; on
  L2-normalised rows it ranks as cosine, since ``||q - g||^2 = 2 - 2 cos``).
* ``R_i`` = number of *other* items (gallery items) with query ``i``'s label. A query with
  ``R_i == 0`` (its class has a single member, or none in the gallery) is excluded from every kNN
  metric and counted in ``n_excluded_queries``. A query never retrieves itself when the gallery is
  the query set; a separate gallery is searched whole, even if it holds copies of the queries.
* ``recall@k``: share of queries with at least one same-class item among their first ``k`` neighbours
  (``recall@1`` equals PML's ``precision_at_1``).
* ``r_precision``: mean over queries of (same-class items among the first ``R_i`` neighbours) / ``R_i``.
* ``map@r``: mean over queries of ``(1/R_i) * sum_{j <= R_i} [match_j] * precision@j`` (PML's
  ``mean_average_precision_at_r``).
* opt-in, OpenMetricLearning's definitions (``oml/functional/metrics.py``, ``calc_precision`` and
  ``calc_map`` of OML 3.1.6 and 4.0.0), with ``h_i`` = same-class items among the first ``i``:
  ``precision@k`` = mean of ``h_k / min(k, R_i)`` (not ``h_k / k``: a query with fewer than k
  relevant items can reach 1); ``map@k`` = mean of ``(1/h_k) * sum_{i <= k} [match_i] * h_i / i``
  (0 when ``h_k = 0``). OML 2.x divided ``map@k`` by ``min(k, R_i)``, PML's
  ``mean_average_precision`` divides by ``R_i``: all three agree when ``k`` reaches every relevant item.
  A ``k`` beyond the gallery is read as the gallery's size (as OML).
* ``nmi``: NMI (arithmetic normalisation) between labels and a seeded k-means clustering of the
  L2-normalised embeddings with k = number of classes (all samples, lone ones included), both
  computed on the embeddings' device (:mod:`vgcore.metrics.clustering`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vgcore.metrics.clustering import kmeans
from vgcore.metrics.clustering import nmi as nmi_score
from vgcore.metrics.inputs import as_embeddings, encode_labels

__all__ = [
    "RETRIEVAL_KEYS",
    "DEFAULT_KS",
    "retrieval_keys",
    "retrieval_metrics",
    "exact_knn",
    "faiss_available",
    "DISTANCES",
]

DEFAULT_KS: tuple[int, ...] = (1, 2, 4, 8)

#: The ``distance`` choices of the kNN: cosine similarity, or the negated squared L2 distance.
DISTANCES: tuple[str, ...] = ("cosine", "squared_l2")

#: Target size in bytes of one query chunk's similarity block when ``chunk_size=None``.
_AUTO_CHUNK_BYTES = 64 * 2**20


def retrieval_keys(
    ks: Sequence[int] = DEFAULT_KS, *, precision_ks: Sequence[int] = (), map_ks: Sequence[int] = ()
) -> tuple[str, ...]:
    """Column names returned by :func:`retrieval_metrics` for the given ``ks`` (and the opt-in
    ``precision_ks``, ``map_ks``), in order."""
    return (
        *(f"recall@{k}" for k in ks),
        *(f"precision@{k}" for k in precision_ks),
        *(f"map@{k}" for k in map_ks),
        "map@r",
        "r_precision",
        "nmi",
        "n_queries",
        "n_excluded_queries",
    )


#: Keys for the default ``ks=(1, 2, 4, 8)``.
RETRIEVAL_KEYS: tuple[str, ...] = retrieval_keys(DEFAULT_KS)

LABELS: dict[str, str] = {
    **{f"recall@{k}": f"Recall@{k} [fraction of queries]" for k in DEFAULT_KS},
    "map@r": "MAP@R [0-1]",
    "r_precision": "R-precision [0-1]",
    "nmi": "NMI (k-means) [0-1]",
    "n_queries": "queries [count]",
    "n_excluded_queries": "queries without a same-class item [count]",
}

def faiss_available() -> bool:
    """True if the optional ``faiss`` package can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _check_inputs(z, y, gallery=None, gallery_labels=None):
    """Query and gallery tensors (NumPy accepted); the gallery is None when it is the query set."""
    if gallery is z and (gallery_labels is None or gallery_labels is y):
        gallery = gallery_labels = None  # the query set itself: leave-one-out
    y, gallery_labels = encode_labels(y, gallery_labels)  # class names: one code per name in both
    z, y = as_embeddings(z, y)
    if gallery is None and gallery_labels is not None:
        raise ValueError("gallery_labels were given without a gallery: pass both, or neither")
    if gallery is None:
        if z.shape[0] < 2:
            raise ValueError("need at least 2 embeddings for leave-one-out retrieval")
        return z, y, None, None
    if gallery_labels is None:
        raise ValueError("a gallery needs its labels: pass gallery_labels (one per gallery row)")
    g, gy = as_embeddings(gallery, gallery_labels, names=("gallery", "gallery_labels"))
    if g.shape[1] != z.shape[1]:
        raise ValueError(f"queries have dimension {z.shape[1]} but the gallery {g.shape[1]}")
    return z, y, g.to(z.device), gy.to(z.device)


def _auto_chunk(n: int) -> int:
    return max(1, min(n, _AUTO_CHUNK_BYTES // (4 * n)))


# --------------------------------------------------------------------------------------------------
# exact kNN with deterministic ties
# --------------------------------------------------------------------------------------------------


def _topk_rows(sims: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` of each row of ``sims`` ordered by (value descending, column ascending).

    Exact under ties: when equal values straddle the k-th place, the lowest column indices win.
    One ``topk(k + 1)`` finds the rows where that can happen (k-th value == (k+1)-th value); only
    those rows are rescanned, so the common case costs no extra pass over the [chunk, N] block.
    """
    n_cols = sims.shape[1]
    kk = min(k + 1, n_cols)
    vals, idx = torch.topk(sims, kk, dim=1, largest=True, sorted=True)
    if kk > k:
        straddle = vals[:, k - 1] == vals[:, k]
        vals, idx = vals[:, :k], idx[:, :k]
        if bool(straddle.any()):
            rows = straddle.nonzero().squeeze(1)
            sub = sims[rows]
            kth = vals[rows, k - 1 :]
            greater = sub > kth
            eq = sub == kth
            need = (k - greater.sum(dim=1)).unsqueeze(1)
            keep = greater | (eq & (eq.cumsum(dim=1) <= need))
            # exactly k kept per row; boolean indexing is row-major, so columns come out ascending
            cols = keep.nonzero()[:, 1].view(len(rows), k)
            sub_vals = sub.gather(1, cols)
            order = torch.sort(sub_vals, dim=1, descending=True, stable=True).indices
            idx, vals = idx.clone(), vals.clone()
            idx[rows] = cols.gather(1, order)
            vals[rows] = sub_vals.gather(1, order)
    return _order_ties_by_index(vals, idx)


def _order_ties_by_index(vals: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Reorder rows sorted by descending value so that equal values come by ascending index.

    Only rows that contain equal neighbouring values are touched (rare for continuous data).
    """
    if vals.shape[1] < 2:
        return vals, idx
    tied = (vals[:, 1:] == vals[:, :-1]).any(dim=1)
    if not bool(tied.any()):
        return vals, idx
    rows = tied.nonzero().squeeze(1)
    v, i = vals[rows], idx[rows]
    order = torch.argsort(i, dim=1)
    v, i = v.gather(1, order), i.gather(1, order)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices
    vals, idx = vals.clone(), idx.clone()
    vals[rows], idx[rows] = v.gather(1, order), i.gather(1, order)
    return vals, idx


def _similarities(q: Tensor, ref: Tensor, ref_sq: Tensor | None) -> Tensor:
    """``q @ ref.T`` (cosine: rows already normalised), or ``-||q - r||^2`` given ``ref_sq = ||r||^2``."""
    sims = q @ ref.T
    if ref_sq is not None:
        sims = 2 * sims - (q * q).sum(dim=1, keepdim=True) - ref_sq
    return sims


def _iter_knn_torch(
    zn: Tensor, k: int, chunk_size: int, gn: Tensor | None = None, distance: str = "cosine"
) -> Iterator[tuple[int, int, Tensor, Tensor]]:
    """Queries ``zn`` against the gallery ``gn`` (None: against ``zn`` itself, never retrieving self)."""
    n = zn.shape[0]
    ref = zn if gn is None else gn
    ref_sq = (ref * ref).sum(dim=1) if distance == "squared_l2" else None
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        sims = _similarities(zn[start:stop], ref, ref_sq)
        if gn is None:
            rows = torch.arange(stop - start, device=zn.device)
            sims[rows, rows + start] = -math.inf  # leave-one-out: never retrieve yourself
        vals, idx = _topk_rows(sims, k)
        del sims
        yield start, stop, vals, idx


def _iter_knn_faiss(
    zn: Tensor, k: int, chunk_size: int, gn: Tensor | None = None, distance: str = "cosine"
) -> Iterator[tuple[int, int, Tensor, Tensor]]:
    """faiss inner-product (L2 for ``"squared_l2"``) search, post-processed to the torch path's ranking.

    faiss is asked for ``k + 2`` neighbours; self is removed by index (leave-one-out). Rows where
    equal scores may straddle the k-th place are recomputed exactly with the torch path.
    """
    import faiss
    import numpy as np

    n, d = zn.shape
    same = gn is None
    ref = zn if same else gn
    x = np.ascontiguousarray(zn.detach().cpu().numpy().astype(np.float32))
    r = x if same else np.ascontiguousarray(ref.detach().cpu().numpy().astype(np.float32))
    l2 = distance == "squared_l2"
    index = faiss.IndexFlatL2(d) if l2 else faiss.IndexFlatIP(d)
    index.add(r)
    ref_sq = (ref * ref).sum(dim=1) if l2 else None
    m = ref.shape[0]
    kk = min(m, k + 2)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        scores, ids = index.search(x[start:stop], kk)
        scores = torch.from_numpy(-scores if l2 else scores).to(zn.device)
        ids = torch.from_numpy(ids).to(zn.device).long()
        if same:
            self_ids = torch.arange(start, stop, device=zn.device).unsqueeze(1)
            is_self = ids == self_ids
            no_self = ~is_self.any(dim=1)
            is_self[no_self, -1] = True  # drop the last column where self was not returned
            ids = ids[~is_self].view(stop - start, kk - 1)
            scores = scores[~is_self].view(stop - start, kk - 1)
        else:
            no_self = torch.zeros(stop - start, dtype=torch.bool, device=zn.device)
        # a tie at the boundary (k-th == (k+1)-th score) may hide lower-index items: redo exactly
        redo = scores[:, k - 1] == scores[:, k] if scores.shape[1] > k else torch.zeros_like(no_self)
        redo = redo | no_self
        scores, ids = _order_ties_by_index(scores[:, :k], ids[:, :k])
        if bool(redo.any()):
            rows = redo.nonzero().squeeze(1)
            sims = _similarities(zn[start + rows], ref, ref_sq)
            if same:
                sims[torch.arange(len(rows), device=zn.device), start + rows] = -math.inf
            v, i = _topk_rows(sims, k)
            scores[rows], ids[rows] = v, i
        yield start, stop, scores, ids


def _normalise(z: Tensor, distance: str = "cosine") -> Tensor:
    """Detached float32/float64 rows, L2-normalised for ``"cosine"`` (raw for ``"squared_l2"``)."""
    z = z.detach()
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()
    return F.normalize(z, dim=1) if distance == "cosine" else z


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; use 'cosine' or 'squared_l2'")


def exact_knn(
    z,
    k: int,
    *,
    gallery=None,
    chunk_size: int | None = None,
    backend: str = "torch",
    distance: str = "cosine",
) -> tuple[Tensor, Tensor]:
    """kNN of every row of ``z``: among the other rows (leave-one-out), or in ``gallery``.

    Returns ``(similarities, indices)``, both ``[N, k]`` (indices into ``gallery`` when given),
    ranked by descending similarity with ties broken by the lower index: cosine, or for
    ``distance="squared_l2"`` the negated squared distance ``-||z_i - g_j||^2`` of the raw rows.
    ``k`` must be at most ``N - 1`` (the gallery's size M with a gallery). NumPy arrays are accepted.
    """
    _check_distance(distance)
    z = _as_float(z, "z")
    if z.ndim != 2 or z.shape[0] < (2 if gallery is None else 1):
        raise ValueError("z must be 2-D with at least 2 rows (1 with a gallery)")
    gn = None if gallery is None else _normalise(_as_float(gallery, "gallery").to(z.device), distance)
    n = z.shape[0]
    m = n - 1 if gn is None else gn.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k must be in [1, {m}], got {k}")
    zn = _normalise(z, distance)
    chunk = chunk_size or _auto_chunk(m + 1)
    it = _knn_iter(zn, k, chunk, backend, gn, distance)
    vals = torch.empty(n, k, dtype=zn.dtype, device=zn.device)
    idx = torch.empty(n, k, dtype=torch.long, device=zn.device)
    for start, stop, v, i in it:
        vals[start:stop], idx[start:stop] = v, i
    return vals, idx


def _as_float(x, name: str) -> Tensor:
    x = x if isinstance(x, Tensor) else torch.as_tensor(x)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    return x


def _knn_iter(zn: Tensor, k: int, chunk: int, backend: str, gn: Tensor | None = None,
              distance: str = "cosine"):
    if backend == "torch":
        return _iter_knn_torch(zn, k, chunk, gn, distance)
    if backend == "faiss":
        if not faiss_available():
            raise ValueError("backend='faiss' requested but faiss is not installed")
        return _iter_knn_faiss(zn, k, chunk, gn, distance)
    raise ValueError(f"unknown backend {backend!r}; use 'torch' or 'faiss'")


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------


def retrieval_metrics(
    z,
    y,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    gallery=None,
    gallery_labels=None,
    chunk_size: int | None = None,
    nmi: bool = True,
    map_at_r: bool = True,
    precision_ks: Sequence[int] = (),
    map_ks: Sequence[int] = (),
    seed: int = 0,
    backend: str = "torch",
    distance: str = "cosine",
) -> dict[str, float]:
    """Retrieval metrics of query embeddings ``z`` [N, D] with labels ``y`` [N] (integers or class
    names: :func:`~vgcore.metrics.inputs.encode_labels` codes them with ``gallery_labels``).

    Without ``gallery`` every query searches the other queries (leave-one-out); with ``gallery``
    [M, D] and ``gallery_labels`` [M] it searches the whole gallery (passing ``z`` itself as the
    gallery is the leave-one-out case). NumPy arrays and tensors on any device are accepted.
    Embeddings are compared by cosine similarity (rows are L2-normalised here; zero rows stay zero),
    or with ``distance="squared_l2"`` by squared Euclidean distance of the raw rows (NMI still clusters
    the L2-normalised rows).
    ``ks``: positive integers. ``chunk_size`` queries are processed at a time (``None``: about
    64 MiB of similarities per chunk). ``nmi=False`` skips k-means (``"nmi"`` is then NaN; NMI
    clusters the queries). ``map_at_r=False`` skips ``map@r`` and ``r_precision`` (NaN), so the kNN
    ranks only ``max(ks)`` neighbours instead of up to the largest class size: Recall@K alone is
    much cheaper on large classes. ``precision_ks``, ``map_ks``: add OML's ``precision@k`` and
    ``map@k`` for these k (module docstring; none by default). ``backend`` is ``"torch"`` or
    ``"faiss"``; both give the same neighbours. Returns floats keyed by :func:`retrieval_keys`.
    """
    _check_distance(distance)
    z, y, g, gy = _check_inputs(z, y, gallery, gallery_labels)
    ks = _check_ks(ks, "ks")
    pks = _check_ks(precision_ks, "precision_ks", empty=True)
    mks = _check_ks(map_ks, "map_ks", empty=True)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    n = z.shape[0]
    same = g is None
    m = n if same else g.shape[0]
    y = y.to(z.device)
    both = y if same else torch.cat([y, gy])
    _, inverse_all, counts_all = torch.unique(both, return_inverse=True, return_counts=True)
    if counts_all.numel() < 2:
        raise ValueError("retrieval metrics need at least 2 classes")
    inverse, g_inverse = inverse_all[:n], inverse_all[n:] if not same else inverse_all
    g_counts = torch.bincount(g_inverse, minlength=counts_all.numel())
    r_all = g_counts[inverse] - (1 if same else 0)  # relevant gallery items per query
    valid = r_all > 0
    n_valid = int(valid.sum())
    n_excluded = n - n_valid

    out: dict[str, float] = {}
    if n_valid > 0:
        k_max = min(m - 1 if same else m, max(*ks, *pks, *mks, int(r_all.max()) if map_at_r else 0))
        zn = _normalise(z, distance)
        gn = None if same else _normalise(g, distance)
        chunk = chunk_size or _auto_chunk(m)
        # per-query values, summed once at the end: results do not depend on the chunking
        hits = torch.zeros(len(ks), dtype=torch.int64, device=zn.device)  # summed on the device: no sync per chunk
        ap_all = torch.zeros(n, dtype=torch.float64, device=zn.device)
        rp_all = torch.zeros(n, dtype=torch.float64, device=zn.device)
        oml_all = torch.zeros(len(pks) + len(mks), n, dtype=torch.float64, device=zn.device)
        cols = torch.arange(1, k_max + 1, device=zn.device)
        ks_t = torch.tensor(ks, device=zn.device)
        for start, stop, _vals, idx in _knn_iter(zn, k_max, chunk, backend, gn, distance):
            q_valid = valid[start:stop]
            r = r_all[start:stop]
            match = g_inverse[idx] == inverse[start:stop].unsqueeze(1)  # [chunk, k_max]
            first_hit = torch.where(
                match.any(dim=1), match.int().argmax(dim=1) + 1, torch.full_like(r, k_max + 1)
            )
            hits += (q_valid.unsqueeze(0) & (first_hit.unsqueeze(0) <= ks_t.unsqueeze(1))).sum(dim=1)
            if pks or mks:
                oml = _oml_precision_map(match, r, pks, mks, cols)
                oml_all[:, start:stop] = torch.where(q_valid, oml, 0.0)
            if not map_at_r:
                continue
            in_r = cols.unsqueeze(0) <= r.unsqueeze(1)
            rel = match & in_r
            n_rel = rel.sum(dim=1)
            cum = rel.cumsum(dim=1)
            prec = (cum * rel).double() / cols.double()
            r_safe = r.clamp(min=1).double()
            ap = prec.sum(dim=1) / r_safe
            rp = n_rel.double() / r_safe
            ap_all[start:stop] = torch.where(q_valid, ap, 0.0)
            rp_all[start:stop] = torch.where(q_valid, rp, 0.0)
        for k, h in zip(ks, hits.tolist(), strict=True):
            out[f"recall@{k}"] = h / n_valid
        oml_keys = (*(f"precision@{k}" for k in pks), *(f"map@{k}" for k in mks))
        for key, total in zip(oml_keys, oml_all.sum(dim=1).tolist(), strict=True):
            out[key] = total / n_valid
        out["map@r"] = float(ap_all.sum()) / n_valid if map_at_r else math.nan
        out["r_precision"] = float(rp_all.sum()) / n_valid if map_at_r else math.nan
    else:
        for key in retrieval_keys(ks, precision_ks=pks, map_ks=mks)[: len(ks) + len(pks) + len(mks)]:
            out[key] = math.nan
        out["map@r"] = math.nan
        out["r_precision"] = math.nan
    out["nmi"] = _nmi(z, y, seed) if nmi else math.nan
    out["n_queries"] = float(n_valid)
    out["n_excluded_queries"] = float(n_excluded)
    return out


def _check_ks(ks: Sequence[int], name: str, *, empty: bool = False) -> tuple[int, ...]:
    ks = tuple(ks)
    if (not ks and not empty) or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in ks):
        raise ValueError(f"{name} must be positive integers (e.g. {name}=(1, 2, 4, 8)), got {ks}")
    return tuple(int(k) for k in ks)


def _oml_precision_map(match: Tensor, r: Tensor, pks: tuple[int, ...], mks: tuple[int, ...],
                       cols: Tensor) -> Tensor:
    """Per-query OML ``precision@k`` then ``map@k`` [len(pks) + len(mks), chunk] from the same-class
    indicators ``match`` [chunk, k_max] and ``R_i`` ``r``; a k beyond ``k_max`` is read as ``k_max``."""
    k_max = match.shape[1]
    cum = match.cumsum(dim=1).double()  # h_i
    prec_at = cum * match / cols.double()  # [match_i] * h_i / i
    rows = []
    for k in pks:
        k = min(k, k_max)
        rows.append(cum[:, k - 1] / r.clamp(min=1, max=k).double())
    for k in mks:
        k = min(k, k_max)
        rows.append(prec_at[:, :k].sum(dim=1) / cum[:, k - 1].clamp(min=1))  # 0 / 1 without a hit
    return torch.stack(rows)


def _nmi(z: Tensor, labels: Tensor, seed: int) -> float:
    """NMI between ``labels`` and a seeded k-means of the L2-normalised ``z`` (k = number of classes)."""
    _, codes = torch.unique(labels, return_inverse=True)
    clusters = kmeans(_normalise(z), int(codes.max()) + 1, seed=seed).labels
    return nmi_score(codes, clusters)
