"""Executors: where jobs run. In this process, in worker processes, or on a Ray cluster.

Every executor has the same interface: ``run(jobs, *, reporter)`` yields
``(job, records)`` as jobs finish (or ``(job, exception)`` when a worker died),
so the runner saves every finished fold at once and the same resume logic serves
all of them; ``close()`` stops its workers. The local executor reports every epoch
to ``reporter``; workers in other processes cannot call back into this one, so
they save snapshot weights themselves (to the results directory) and their folds
are reported as they come back.
"""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING, Any

from kfold_clr.errors import ConfigError, KfoldClrError
from kfold_clr.process.runtime import limit_threads

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Iterable, Iterator
    from typing import TypeAlias

    from kfold_clr.config.schema import ExecutionConfig
    from kfold_clr.execution.worker import Reporter, WorkerContext
    from kfold_clr.planning.jobs import Job

    Outcome: TypeAlias = tuple[Job, list[dict] | BaseException]  # a job and its fold records, or why it died


class LocalExecutor:
    """Runs jobs one after another in this process (with per-epoch progress)."""

    def __init__(self, context: WorkerContext) -> None:
        self.context = context

    def run(self, jobs: Iterable[Job], *, reporter: Reporter | None = None) -> Iterator[Outcome]:
        from kfold_clr.execution.worker import Reporter, run_job

        for job in jobs:
            yield job, run_job(self.context, job, reporter=reporter or Reporter())

    def close(self) -> None:
        pass


def _run_payload_job(payload: dict, job: Job) -> list[dict]:
    from kfold_clr.execution.worker import Reporter, run_job
    from kfold_clr.storage.store import ResultsStore

    store = ResultsStore(payload["config"]["output"]["dir"])  # snapshot weights land on the worker's disk
    return run_job(payload, job, reporter=Reporter(
        save_snapshots=store.save_plan_snapshots,
        verbose_errors=payload.get("verbose_errors", False)))


class WorkerDied(RuntimeError):
    """A worker process ended in the middle of a job (killed, out of memory, crashed)."""


def _death_cause(exit_code: int | None) -> str:
    import signal

    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        hint = ", e.g. by the out-of-memory killer or kill -9" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {exit_code}"


def _guarded_lines(source: str) -> list[tuple[int, int]]:
    """(first, last) lines of every `if __name__ == "__main__":` block of a script's source."""
    import ast

    blocks = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and len(node.test.comparators) == 1:
            sides = [node.test.left, node.test.comparators[0]]
            names = {side.id for side in sides if isinstance(side, ast.Name)}
            values = {side.value for side in sides if isinstance(side, ast.Constant)}
            if names == {"__name__"} and values == {"__main__"}:
                blocks.append((node.lineno, node.end_lineno))
    return blocks


def check_main_guard() -> None:
    """Refuse (ConfigError) to start worker processes from a script's unguarded top level.

    Spawned workers import the main script again; a call at its top level (not under
    `if __name__ == "__main__":`) would then start the run again in every worker, which
    multiprocessing stops with tracebacks. Package `__main__` modules (`python -m`),
    notebooks and interactive sessions are not re-imported and pass."""
    import inspect
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if path is None or (spec is not None and spec.name.endswith("__main__")):
        return
    frames = [frame for frame, *_ in inspect.stack(0) if frame.f_globals is main.__dict__
              and frame.f_code.co_name == "<module>"]
    if not frames:
        return
    try:
        source = pathlib.Path(path).read_text(encoding="utf-8")
        blocks = _guarded_lines(source)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    line = frames[-1].f_lineno
    if not any(first <= line <= last for first, last in blocks):
        raise ConfigError(f"worker processes (n_jobs / execution.executor: processes) import {path} again, "
                          f"whose line {line} starts this run at the top level: put it under "
                          "`if __name__ == \"__main__\":`, or train in this process (n_jobs=None)")


class ProcessExecutor:
    """Runs jobs in `workers` spawned processes, each limited to `threads` TensorFlow threads.

    A worker that dies in the middle of a job (out of memory, `kill -9`) costs only
    that job: pebble replaces the worker, the job is tried again up to `retries`
    times and is then recorded as failed, and the other jobs go on.
    """

    def __init__(self, payload: dict, *, workers: int | None = None, threads: int | None = None, retries: int = 1,
                 log: Callable[[str], Any] = print) -> None:
        import multiprocessing

        import pebble

        check_main_guard()
        cpus = os.cpu_count() or 1
        self.workers = workers or cpus
        self.threads = threads or max(1, cpus // self.workers)
        self.payload, self.retries, self.log = payload, retries, log
        self._pool = pebble.ProcessPool(max_workers=self.workers, initializer=limit_threads,
                                        initargs=(self.threads,), context=multiprocessing.get_context("spawn"))

    def run(self, jobs: Iterable[Job], *, reporter: Reporter | None = None) -> Iterator[Outcome]:
        """Yield (job, records) as workers finish; `reporter` is unused (see the module docstring)."""
        import concurrent.futures

        import pebble

        pending = {self._submit(job): (job, 0) for job in jobs}
        try:
            while pending:
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    job, retried = pending.pop(future)
                    try:
                        records = future.result()
                    except pebble.ProcessExpired as error:
                        cause = _death_cause(error.exitcode)
                        if retried < self.retries:
                            self.log(f"worker process {error.pid} died ({cause}) during {_describe(job)}; "
                                     f"trying again ({retried + 1} of {self.retries})")
                            pending[self._submit(job)] = (job, retried + 1)
                            continue
                        records = WorkerDied(f"worker process died ({cause}); tried {retried + 1} time(s)")
                    except KfoldClrError:
                        raise
                    except Exception as error:  # noqa: BLE001 - recorded as the job's failure
                        records = error
                    yield job, records
        finally:
            for future in pending:
                future.cancel()

    def _submit(self, job: Job) -> concurrent.futures.Future:
        return self._pool.schedule(_run_payload_job, args=(self.payload, job))

    def close(self) -> None:
        """Stop the workers (jobs still running after an interrupt are abandoned; they resume later)."""
        self._pool.stop()
        self._pool.join()


def _describe(job: Job) -> str:
    plans = ", ".join(f"{plan.strategy} {plan.key}" for plan in job.plans[:3])
    return plans + (f" and {len(job.plans) - 3} more" if len(job.plans) > 3 else "")


class RayExecutor:
    """Runs each job as a Ray task (`pip install "kfold-clr[ray]"`).

    Args:
        payload: dict. The plain-data context every task rebuilds.
        address: str or None. None starts a local Ray; "auto" or "host:port" joins a cluster.
        num_cpus: float. CPUs each task asks for (its TensorFlow thread limit).
        num_gpus: float. GPUs (or a fraction) each task asks for.
        workers: int or None. CPUs of a Ray started here.
        retries: int. Times Ray runs a task again whose worker died.
    """

    def __init__(self, payload: dict, *, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 workers: int | None = None, retries: int = 1) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("execution.executor: 'ray' needs Ray; install it with "
                              "pip install \"kfold-clr[ray]\"") from None
        self.ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            options = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=workers or os.cpu_count() or 1, **options)
        self.payload = payload
        self._task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=retries,
                                retry_exceptions=False)(_ray_job)
        self.threads = max(1, int(num_cpus))

    def run(self, jobs: Iterable[Job], *, reporter: Reporter | None = None) -> Iterator[Outcome]:
        """Yield (job, records) as tasks finish; `reporter` is unused (see the module docstring)."""
        pending = {self._task.remote(self.payload, job, self.threads): job for job in jobs}
        try:
            while pending:
                done, _ = self.ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    yield job, self.ray.get(done[0])
                except Exception as error:  # noqa: BLE001 - a task that died
                    cause = getattr(error, "cause", None)
                    if isinstance(cause, KfoldClrError):
                        raise cause from None
                    yield job, error
        finally:
            for ref in pending:
                self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started_here:
            self.ray.shutdown()


def _ray_job(payload: dict, job: Job, threads: int) -> list[dict]:
    limit_threads(threads)
    return _run_payload_job(payload, job)


def make_executor(execution: ExecutionConfig, *, context: WorkerContext, payload: dict,
                  log: Callable[[str], Any] = print) -> LocalExecutor | ProcessExecutor | RayExecutor:
    """The executor an `execution:` section asks for."""
    if execution.executor == "processes":
        return ProcessExecutor(payload, workers=execution.workers, threads=execution.threads_per_worker,
                               retries=execution.retries, log=log)
    if execution.executor == "ray":
        return RayExecutor(payload, address=execution.address, num_cpus=execution.num_cpus,
                           num_gpus=execution.num_gpus, workers=execution.workers, retries=execution.retries)
    return LocalExecutor(context)
