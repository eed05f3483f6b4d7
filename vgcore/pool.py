"""Training tasks spread over worker processes, each with a set number of CPU threads.

A fused group (:func:`vgcore.train.run_group`) runs its heads one after another in one process; on
a CPU the small matrix products of one head gain nothing from a second thread (the fair tuning's
FashionMNIST group: 36 heads x 2 epochs took 65.7 s at 2 threads and 65.8 s at 1 on 2 cores, and
two 1-thread processes of 36 heads each ran side by side in 73 s; ``benchmarks/bench_workers.py``).
:func:`run_tasks` runs tasks in ``jobs`` worker processes of ``threads`` threads each, and
:func:`split` cuts a group into chunks of heads that share its batch stream (each chunk draws the
same batches: a run equals the run trained alone, so the numbers do not depend on how a group is
cut, only on the thread count; ``tests/test_pool.py``).

This module imports nothing heavy at its top: a worker sets its thread count and its progress-bar
line (``TQDM_POSITION``, read when tqdm is imported) before torch and tqdm are loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_jobs(value: int | str) -> int:
    """``"all"`` -> :func:`available_cores`; a positive integer (or its string) as it is."""
    if str(value) == "all":
        return available_cores()
    try:
        jobs = int(value)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise ValueError(f"jobs must be a positive integer or 'all', got {value!r}")
    return jobs


def split(members: Sequence, parts: int) -> list[list]:
    """`members` dealt round-robin into at most `parts` non-empty chunks (each chunk a mix of what
    the order groups together, e.g. every loss's trials): ``[a, b, c, d, e], 2 -> [[a, c, e], [b, d]]``."""
    parts = max(1, min(parts, len(members)))
    return [list(members[k::parts]) for k in range(parts)]


def _start_worker(slots, threads: int) -> None:
    """A worker's first act: its progress-bar line and thread count, before torch or tqdm is imported."""
    os.environ["TQDM_POSITION"] = str(slots.get())
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def run_tasks(fn: Callable[..., Any], tasks: Sequence[tuple], jobs: int = 1, *, threads: int = 1,
              desc: str = "tasks", progress: bool = True) -> list[Any]:
    """``[fn(*task) for task in tasks]`` at ``threads`` CPU threads, in ``jobs`` worker processes when
    ``jobs`` > 1 (started with ``spawn``; `fn` must be importable at module level), else in this
    process (its thread count restored after). Each worker has its own progress-bar line below this
    one. Every task runs; then the first failed task's error (in task order) is raised here."""
    from tqdm import tqdm

    if jobs <= 1 or len(tasks) <= 1:
        import torch

        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return [fn(*task) for task in tqdm(tasks, desc=desc, disable=not progress)]
        finally:
            torch.set_num_threads(saved)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    jobs = min(jobs, len(tasks))
    slots = context.Queue()
    for slot in range(1, jobs + 1):
        slots.put(slot)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(slots, threads)) as pool:
        futures = {pool.submit(fn, *task): k for k, task in enumerate(tasks)}
        for _ in tqdm(as_completed(futures), total=len(futures), desc=f"{desc} ({jobs} workers)",
                      disable=not progress, position=0):
            pass
        return [future.result() for future in sorted(futures, key=futures.get)]
