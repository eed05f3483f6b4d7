"""vgcore: losses, VARIANCE and GREEDINESS diagnostics, and retrieval metrics for metric learning.

Companion to "Variance & Greediness: A comparative study of metric-learning losses"
(Zeng, Niu, Li, Taya; ICASSP 2026; arXiv 2601.21450).
"""

__version__ = "0.1.0"
