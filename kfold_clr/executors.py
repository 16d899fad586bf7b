"""Executors: where jobs run. In this process, in worker processes, or on a Ray cluster.

Each executor yields ``(job, records)`` as jobs finish (or ``(job, exception)``
when a worker died), so the runner saves every finished fold at once and the
same resume logic serves all of them.
"""

import os

from kfold_clr.errors import ConfigError, KfoldClrError
from kfold_clr.runtime import limit_threads


class LocalExecutor:
    """Runs jobs one after another in this process (with per-epoch progress)."""

    name = "local"

    def __init__(self, context):
        self.context = context

    def run(self, jobs, **job_options):
        from kfold_clr.jobs import run_job

        for job in jobs:
            yield job, run_job(self.context, job, **job_options)

    def close(self):
        pass


def _run_payload_job(payload, job):
    from kfold_clr.jobs import run_job
    from kfold_clr.store import ResultsStore

    store = ResultsStore(payload["output_dir"])  # snapshot weights land on the worker's disk
    return run_job(payload, job,
                   snapshot_store=lambda plan, snaps: store.save_snapshots(plan.strategy, plan.key, snaps))


class ProcessExecutor:
    """Runs jobs in `workers` spawned processes, each limited to `threads` TensorFlow threads."""

    name = "processes"

    def __init__(self, payload, *, workers=None, threads=None):
        import concurrent.futures
        import multiprocessing

        cpus = os.cpu_count() or 1
        self.workers = workers or cpus
        self.threads = threads or max(1, cpus // self.workers)
        self.payload = payload
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=limit_threads, initargs=(self.threads,))

    def run(self, jobs, **_):
        import concurrent.futures

        futures = {self._pool.submit(_run_payload_job, self.payload, job): job for job in jobs}
        try:
            for future in concurrent.futures.as_completed(futures):
                job = futures[future]
                try:
                    records = future.result()
                except KfoldClrError:
                    raise
                except Exception as error:  # noqa: BLE001 - e.g. a worker killed by the OS
                    records = error
                yield job, records
        finally:
            for future in futures:
                future.cancel()

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Runs each job as a Ray task (`pip install "kfold-clr[ray]"`).

    Args:
        payload: dict. The plain-data context every task rebuilds.
        address: str or None. None starts a local Ray; "auto" or "host:port" joins a cluster.
        num_cpus: float. CPUs each task asks for (its TensorFlow thread limit).
        num_gpus: float. GPUs (or a fraction) each task asks for.
    """

    name = "ray"

    def __init__(self, payload, *, address=None, num_cpus=1, num_gpus=0, workers=None):
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
        self._task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_ray_job)
        self.threads = max(1, int(num_cpus))

    def run(self, jobs, **_):
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

    def close(self):
        if self._started_here:
            self.ray.shutdown()


def _ray_job(payload, job, threads):
    limit_threads(threads)
    return _run_payload_job(payload, job)


def make_executor(execution, *, context, payload):
    """The executor an `execution:` section asks for."""
    if execution.executor == "processes":
        return ProcessExecutor(payload, workers=execution.workers, threads=execution.threads_per_worker)
    if execution.executor == "ray":
        return RayExecutor(payload, address=execution.address, num_cpus=execution.num_cpus,
                           num_gpus=execution.num_gpus, workers=execution.workers)
    return LocalExecutor(context)
