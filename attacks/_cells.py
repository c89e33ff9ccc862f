"""Where the cells of a benchmark grid run: Ray tasks, local processes or this process.

Both ``parley bench attacks`` (:mod:`parley.attacks.bench`) and ``parley bench negotiation-backdoor``
(:mod:`parley.attacks.negotiation_bench`) hand their cells to :func:`run_cells`. A cell's row depends
only on the config and the cell, never on where it ran, so the executors are interchangeable; rows come
back in the order cells finish, and each bench appends them to its ``results.csv`` as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["EXECUTORS", "executor_problems", "executor_kind", "run_cells"]

#: Executor names a bench config accepts; ``auto`` picks one of the others (see :func:`executor_kind`).
EXECUTORS = ("auto", "ray", "process", "serial")

ConfigT = TypeVar("ConfigT")
CellT = TypeVar("CellT")
Row = dict[str, Any]


def executor_problems(executor: str, workers: int, ray_address: str | None) -> list[str]:
    """What is wrong with these executor settings (empty when nothing is)."""
    problems = []
    if executor not in EXECUTORS:
        problems.append(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if workers < 1:
        problems.append(f"workers must be >= 1, got {workers}")
    if ray_address is not None and not ray_address.strip():
        problems.append("ray_address is empty; give a Ray cluster's address (or 'auto'), or leave it unset")
    if ray_address and executor in ("process", "serial"):
        problems.append(f"ray_address {ray_address!r} needs the ray (or auto) executor, not {executor!r}")
    return problems


def executor_kind(executor: str, workers: int, ray_address: str | None) -> str:
    """The executor that runs the cells: ``auto`` means Ray with an address, processes with several
    workers, else this process."""
    if executor != "auto":
        return executor
    if ray_address:
        return "ray"
    return "process" if workers > 1 else "serial"


def run_cells(run_one: Callable[[ConfigT, CellT], Row], config: ConfigT, cells: Sequence[CellT], *,
              executor: str, workers: int, ray_address: str | None = None) -> Iterator[Row]:
    """Run ``run_one(config, cell)`` for every cell and yield each row as its cell finishes.

    ``run_one`` must be a module-level function (workers import it by name) that turns a failing cell
    into a row rather than raising. Ray starts locally with ``workers`` CPUs unless ``ray_address`` names
    a cluster, and is shut down afterwards only when it was started here.
    """
    problems = executor_problems(executor, workers, ray_address)
    if problems:
        raise ValueError("; ".join(problems))
    runner = {"ray": _run_ray, "process": _run_processes, "serial": _run_serial}[
        executor_kind(executor, workers, ray_address)]
    yield from runner(run_one, config, list(cells), workers, ray_address)


def _run_ray(run_one, config, cells, workers: int, ray_address: str | None) -> Iterable[Row]:
    try:
        import ray
    except ImportError as error:
        raise RuntimeError("the Ray executor needs ray (pip install 'parley[rl]'); use --executor process") \
            from error
    started_here = not ray.is_initialized()
    if started_here:
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_one)
        pending = [remote.remote(config, cell) for cell in cells]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()


def _run_processes(run_one, config, cells, workers: int, ray_address: str | None) -> Iterable[Row]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # "spawn" keeps torch's thread pools and any CUDA state of the parent out of the workers.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(run_one, config, cell) for cell in cells]
        for future in as_completed(futures):
            yield future.result()


def _run_serial(run_one, config, cells, workers: int, ray_address: str | None) -> Iterable[Row]:
    for cell in cells:
        yield run_one(config, cell)
