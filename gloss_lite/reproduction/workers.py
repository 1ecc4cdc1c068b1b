"""Runs in worker processes: a fresh process per run, GPUs in turn, a thread budget per worker.

Used by ``gloss_lite.reproduction.run``; taught with it in ``notebooks/07_reproducing_the_paper.ipynb``.

- **A fresh process per run** (``spawn``): a run's memory is its own and is returned when it
  ends. Plain ``multiprocessing`` processes, one per run, so that it works from Python 3.10
  (``ProcessPoolExecutor(max_tasks_per_child=1)`` needs 3.11).
- **GPUs in turn.** Worker slot ``k`` sees only GPU ``gpus[k mod len(gpus)]``
  (``CUDA_VISIBLE_DEVICES``, set before CUDA starts in that process), so ``jobs`` runs spread
  round-robin over the visible GPUs. ``default_jobs``: ``RUNS_PER_GPU`` runs per GPU (one run's
  host work, such as tokenising and scoring, overlaps another's kernels), at most one per two
  CPU cores; one on a CPU, which then uses every core.
- **A thread budget.** Each worker gets ``cores // jobs`` threads, for torch and for the
  tokenizers' own pool (``RAYON_NUM_THREADS``; ``TOKENIZERS_PARALLELISM`` off with one thread),
  so that ``jobs`` workers do not oversubscribe the CPU.
- **Failures and fatal errors.** A run that raises is reported as failed, with its error, and
  the others go on. A fatal error (``KeyboardInterrupt``, a full or read-only disk) ends every
  running worker and cancels what is queued; the cancelled runs are printed and nothing more runs.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import multiprocessing
import multiprocessing.connection
import os
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import cast

__all__ = [
    "cpu_cores",
    "default_jobs",
    "describe",
    "FATAL_ERRNOS",
    "FatalGridError",
    "Outcome",
    "run_all",
    "RUNS_PER_GPU",
    "visible_gpus",
    "worker_environment",
]

RUNS_PER_GPU = 4
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def cpu_cores() -> int:
    """The CPU cores this process may use (its affinity where the system tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def visible_gpus(device: str) -> list[str]:
    """The GPU ids to spread runs over: those of ``CUDA_VISIBLE_DEVICES`` (else all) when ``device`` is
    "auto" or "cuda"; none for "cpu" or a device naming one GPU ("cuda:1")."""
    if str(device) not in ("auto", "cuda"):
        return []
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [part.strip() for part in listed.split(",") if part.strip()] if listed is not None else []
    return (ids or [str(index) for index in range(count)])[:count]


def default_jobs(gpus: list[str], cores: int) -> int:
    """``RUNS_PER_GPU`` runs per GPU, at most ``cores // 2``; one run on a CPU."""
    if not gpus:
        return 1
    return max(1, min(RUNS_PER_GPU * len(gpus), cores // 2))


def worker_environment(slot: int, gpus: list[str], threads: int) -> dict:
    """The environment of worker ``slot``: its GPU and its thread budget."""
    environment = {"TOKENIZERS_PARALLELISM": "true" if threads > 1 else "false", "RAYON_NUM_THREADS": str(threads),
                   "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpus:
        environment["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return environment


@dataclasses.dataclass
class Outcome:
    """What became of one run: its rows, or its error (``error``: type, message, traceback)."""

    run: object
    rows: list | None
    error: dict | None
    seconds: float

    @property
    def fatal(self) -> bool:
        return bool(self.error and self.error.get("fatal"))


class FatalGridError(RuntimeError):
    """A fatal error ended the grid; ``cancelled`` are the runs it stopped or never started."""

    def __init__(self, message: str, cancelled: list):
        super().__init__(message)
        self.cancelled = cancelled


def describe(error: BaseException) -> dict:
    """An error as plain values: its type, message, traceback, and whether it must stop the grid."""
    disk = isinstance(error, OSError) and error.errno in FATAL_ERRNOS
    return {"type": type(error).__name__, "message": str(error) or repr(error), "fatal": bool(
        disk or isinstance(error, KeyboardInterrupt)), "traceback": "".join(traceback.format_exception(error))[-4000:]}


def _worker(connection, execute, run, spec, environment: dict, threads: int) -> None:
    os.environ.update(environment)  # before CUDA or the tokenizers' pool start in this process
    import torch

    torch.set_num_threads(threads)
    try:
        connection.send(("done", execute(run, spec)))
    except BaseException as error:  # reported to the parent, which decides what it means for the grid
        connection.send(("failed", describe(error)))
    finally:
        connection.close()


def run_all(runs: list, spec: dict, execute, *, jobs: int, on_outcome, ready=lambda run: True) -> None:
    """Run each of ``runs`` (``ready(run)`` False: skipped), ``jobs`` at a time in worker processes
    (``jobs=0``: one after another in this process); ``on_outcome(outcome)`` as each ends.

    Raises ``FatalGridError`` (with the cancelled runs) on a fatal error in a run or in
    ``on_outcome``, and re-raises ``KeyboardInterrupt`` after ending every worker.
    """
    queue = collections.deque(runs)
    if jobs == 0:
        while queue:
            run = queue.popleft()
            if not ready(run):
                continue
            started = time.perf_counter()
            try:
                outcome = Outcome(run, execute(run, spec), None, time.perf_counter() - started)
            except Exception as error:
                outcome = Outcome(run, None, describe(error), time.perf_counter() - started)
            except KeyboardInterrupt:
                _cancel([run, *queue], "interrupted")
                raise
            _finish(outcome, on_outcome, [*queue])
        return
    _run_in_processes(queue, spec, execute, jobs, on_outcome, ready)


def _run_in_processes(queue, spec, execute, jobs, on_outcome, ready) -> None:
    context = multiprocessing.get_context("spawn")
    gpus, threads = spec.get("gpus") or [], spec.get("threads") or max(1, cpu_cores() // jobs)
    # a worker's receiving end -> (its process, its run, its slot, when it started)
    running: dict[Connection, tuple[SpawnProcess, object, int, float]] = {}
    free = list(range(jobs))
    try:
        while queue or running:
            while queue and free:
                run = queue.popleft()
                if not ready(run):
                    continue
                slot = free.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(
                    sender, execute, run, spec, worker_environment(slot, gpus, threads), threads))
                process.start()
                sender.close()  # the worker holds the only sending end: its exit is seen as end of file
                running[receiver] = (process, run, slot, time.perf_counter())
            for ended in multiprocessing.connection.wait(list(running)):
                receiver = cast(Connection, ended)  # wait() returns some of the objects it was given
                process, run, slot, started = running.pop(receiver)
                try:
                    kind, payload = receiver.recv()
                except EOFError:
                    process.join()
                    killed = " (killed: out of memory?)" if process.exitcode in (-9, 137) else ""
                    kind, payload = "failed", {"type": "WorkerDied", "fatal": False, "traceback": "",
                                               "message": f"the worker ended with exit code {process.exitcode}{killed}"}
                process.join()
                free.append(slot)
                rows, error = (payload, None) if kind == "done" else (None, payload)
                _finish(Outcome(run, rows, error, time.perf_counter() - started), on_outcome,
                        [*queue, *(entry[1] for entry in running.values())])
    except BaseException as error:
        for process, run, _, _ in running.values():
            process.terminate()
        for process, *_ in running.values():
            process.join()
        if not isinstance(error, FatalGridError):
            _cancel([*(entry[1] for entry in running.values()), *queue], type(error).__name__)
        raise


def _finish(outcome: Outcome, on_outcome, rest: list) -> None:
    """Hand ``outcome`` on; a fatal one (or a fatal error while recording it) cancels ``rest``."""
    if outcome.fatal:
        failure = outcome.error
        assert failure is not None  # a fatal outcome is an error
        _cancel([outcome.run, *rest], failure["type"])
        raise FatalGridError(f"{outcome.run}: {failure['type']}: {failure['message']}; "
                             "the grid stopped", [outcome.run, *rest])
    try:
        on_outcome(outcome)
    except OSError as error:
        if error.errno not in FATAL_ERRNOS:
            raise
        _cancel(rest, f"{type(error).__name__}: {error}")
        raise FatalGridError(f"recording {outcome.run} failed ({error}); the grid stopped", rest) from error


def _cancel(runs: list, reason: str) -> None:
    if runs:
        print(f"{reason}: {len(runs)} run(s) stopped or cancelled, none of them recorded: "
              + "; ".join(str(run) for run in runs), flush=True)
