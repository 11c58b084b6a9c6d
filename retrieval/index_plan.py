"""Which FAISS index to build for ``n`` vectors of dimension ``d`` within a memory budget.

Follows the FAISS wiki "Guidelines to choose an index" (github.com/facebookresearch/faiss/wiki):
exact ``Flat`` for small collections; if memory is no concern ``HNSW32`` (4d + 2*M*4 bytes a vector;
not on GPU); if it is somewhat a concern an inverted file ``IVFk,Flat`` with k about 4*sqrt(n) lists
(an ``_HNSW32`` coarse quantizer once k is large); if the float vectors do not fit, compressed codes,
``IVFk,SQ8`` (d bytes) then ``IVFk,PQm`` (m bytes). Inner product on L2-normalised vectors (cosine).
Pure arithmetic: tests call it with counts, dims and budgets directly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

HNSW_M = 32
ID_BYTES = 8  # IVF lists store an int64 id per vector
MIN_TRAIN_PER_LIST = 40  # FAISS warns below 39 training points per centroid
HNSW_QUANTIZER_FROM = 16_384  # lists: a flat coarse quantizer gets slow beyond this
PQ_SIZES = (96, 64, 48, 32, 24, 16, 12, 8, 4)  # sub-quantizers (bytes per code), largest that fits wins


@dataclass(frozen=True)
class IndexPlan:
    kind: str  # flat | hnsw | ivf_flat | ivf_sq8 | ivf_pq
    factory: str  # faiss.index_factory string
    search_param: str | None  # the knob tuned for recall: nprobe | efSearch | None (exact)
    search_values: tuple[int, ...]  # candidates tried upward
    train_size: int  # vectors to train on (0: no training)
    estimated_mb: float
    reason: str

    def to_dict(self) -> dict:
        return {**asdict(self), "search_values": list(self.search_values)}


def ivf_lists(n: int) -> int:
    """About 4*sqrt(n) lists, a power of two, at least 16, with >= 40 vectors per list to train."""
    target = 4 * math.sqrt(n)
    lists = 2 ** max(4, round(math.log2(target)))
    while lists > 16 and lists * MIN_TRAIN_PER_LIST > n:
        lists //= 2
    return lists


def plan_index(n: int, dim: int, memory_budget_mb: float, flat_below: int, gpu: bool = False) -> IndexPlan:
    """The index for ``n`` vectors of ``dim`` floats; a ValueError if not even PQ codes fit the budget."""
    if n <= 0 or dim <= 0:
        raise ValueError(f"cannot plan an index for {n} vectors of dimension {dim}")
    budget = memory_budget_mb * 2**20
    flat_bytes = n * dim * 4
    if n < flat_below and flat_bytes <= budget:
        return IndexPlan("flat", "Flat", None, (), 0, _mb(flat_bytes),
                         f"{n} < flat_below {flat_below}: exact search")
    hnsw_bytes = n * (dim * 4 + HNSW_M * 2 * 4)
    if not gpu and hnsw_bytes <= budget:
        return IndexPlan("hnsw", f"HNSW{HNSW_M},Flat", "efSearch", tuple(2**i for i in range(4, 12)), 0,
                         _mb(hnsw_bytes), f"graph fits the budget ({_mb(hnsw_bytes):.0f} MB): HNSW{HNSW_M}")
    lists = ivf_lists(n)
    coarse = _coarse(lists, gpu)
    centroid_bytes = lists * dim * 4 * (1 if coarse == f"IVF{lists}" else 2)
    train = min(n, lists * MIN_TRAIN_PER_LIST)
    nprobes = tuple(2**i for i in range(int(math.log2(lists)) + 1))
    for kind, code_bytes, codec in (("ivf_flat", dim * 4, "Flat"), ("ivf_sq8", dim, "SQ8"),
                                    *(("ivf_pq", m, f"PQ{m}") for m in PQ_SIZES if dim % m == 0 and m < dim)):
        total = n * (code_bytes + ID_BYTES) + centroid_bytes
        if total <= budget:
            why = "floats fit the budget" if kind == "ivf_flat" else f"floats do not fit: {code_bytes}-byte codes"
            if kind == "ivf_flat" and gpu:
                why += " (HNSW has no GPU version)"
            return IndexPlan(kind, f"{coarse},{codec}", "nprobe", nprobes, train, _mb(total),
                             f"{why}; {lists} lists ~ 4*sqrt({n})")
    raise ValueError(f"{n} vectors of dimension {dim} do not fit in {memory_budget_mb} MB even as "
                     f"{PQ_SIZES[-1]}-byte PQ codes; raise retrieval.index.memory_budget_mb")


def _coarse(lists: int, gpu: bool) -> str:
    """The coarse quantizer: flat, or an HNSW graph over many centroids on the CPU (a GPU scans them fast)."""
    return f"IVF{lists}_HNSW{HNSW_M}" if lists >= HNSW_QUANTIZER_FROM and not gpu else f"IVF{lists}"


def _mb(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)
