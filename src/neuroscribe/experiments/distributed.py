"""Experiment runs on a Ray cluster: units computed by Ray workers, every result committed by the driver.

The driver (the process of `neuroscribe run --ray`, or `run_experiment(..., executor=RayWorkers(...))`) does all
that a one-process run does (manifest, collection, pending units, progress, summary) except computing units: it
hands each pending unit to one of the worker actors, at most `run.max_concurrent_units` per worker, and commits
the outcomes a worker sends back through the runner's `commit`. The run directory thus has one writer, and
resume is a one-process run's: what was committed stays and is not redone, what was in flight is redone.

Each worker builds its own backends from the config (a model of its own, or clients of servers). The
concurrency and rate limits of a server are kept by one limits actor owned by the driver, which a worker's
client asks for a slot before every request, so they hold across workers; a model of the worker's own keeps
its limits per worker (each worker has its own copy). A worker that dies is started again by Ray, which retries
its units in flight on it; the slots its earlier life held are handed back when it starts.

The run directory, the response cache and the dataset must be on a filesystem every node sees
(docs/distributed.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from neuroscribe.datasets.collect.distributed import connect, require_ray
from neuroscribe.errors import BackendError, ConfigError, NeuroscribeError
from neuroscribe.experiments.config import ExperimentConfig
from neuroscribe.experiments.runner import _Runner
from neuroscribe.experiments.store import RunStore, UnitOutcome
from neuroscribe.llm.base import TransportSettings
from neuroscribe.llm.limits import Limiter, TokenCharge, share_limits_beyond_process, shared_limiter
from neuroscribe.records import UnitId
from neuroscribe.results import ResultRecord

WORKER_RESTARTS = 3
"""How often Ray starts a dead worker again (and retries its units in flight) before the run stops."""
LIMITS_CONCURRENCY = 100_000
"""Calls the limits actor serves at once: every request of every worker may be waiting for a slot."""
CLOSE_TIMEOUT_S = 30.0
"""How long workers get to close their backends (caches, servers) before they are killed."""

Holder = tuple[int, int]
"""(worker number, pid): who holds a slot; a worker started again has the same number and another pid."""


# --- limits shared by the workers --------------------------------------------------------------------------


class _Limits:
    """The limits of every server of a run, for all its workers: a Ray actor owned by the driver, holding
    this process's `shared_limiter`s (so the limits mean what they mean in one process)."""

    def __init__(self) -> None:
        self._leases: dict[str, tuple[Holder, contextlib.AbstractAsyncContextManager[TokenCharge], TokenCharge]] = {}
        self._returned: set[str] = set()
        """Leases handed back before they were granted (a cancelled wait): released when granted."""
        self._workers: dict[int, int] = {}
        """Worker number -> pid of its live process."""

    async def acquire(self, holder: Holder, lease: str, key: str, transport: TransportSettings,
                      estimated_tokens: int) -> None:
        slot = shared_limiter(key, transport).slot(estimated_tokens)
        charge = await slot.__aenter__()
        self._leases[lease] = (holder, slot, charge)
        if lease in self._returned or self._workers.get(holder[0], holder[1]) != holder[1]:
            await self.release(lease, None)  # its asker is gone

    async def release(self, lease: str, actual_tokens: int | None) -> None:
        entry = self._leases.pop(lease, None)
        if entry is None:
            self._returned.add(lease)
            return
        self._returned.discard(lease)
        _, slot, charge = entry
        if actual_tokens is not None:
            charge.settle(actual_tokens)
        await slot.__aexit__(None, None, None)

    async def worker_started(self, number: int, pid: int) -> None:
        """Worker `number` runs as `pid` now: the slots of its earlier processes are free again."""
        self._workers[number] = pid
        for lease, (holder, _, _) in list(self._leases.items()):
            if holder[0] == number and holder[1] != pid:
                await self.release(lease, None)


class _Settled(TokenCharge):
    """The token count a request really used, sent with the slot when it is handed back."""

    def __init__(self, estimated: int) -> None:
        super().__init__(None, estimated)
        self.actual: int | None = None

    def settle(self, actual_tokens: int) -> None:
        self.actual = actual_tokens


class _ClusterLimiter(Limiter):
    """A server's limits as the run's limits actor keeps them: each request waits there for its slot."""

    def __init__(self, limits: Any, holder: Holder, key: str, transport: TransportSettings) -> None:
        super().__init__(transport)
        self._limits = limits
        self._holder = holder
        self._key = key
        self._in_flight = 0

    @asynccontextmanager
    async def slot(self, estimated_tokens: int) -> AsyncIterator[TokenCharge]:
        lease = uuid.uuid4().hex
        try:
            await self._limits.acquire.remote(self._holder, lease, self._key, self.transport, estimated_tokens)
        except BaseException:
            self._limits.release.remote(lease, None)  # a cancelled wait: the slot goes back once granted
            raise
        charge = _Settled(estimated_tokens)
        self._in_flight += 1
        try:
            yield charge
        finally:
            self._in_flight -= 1
            self._limits.release.remote(lease, charge.actual)

    def in_flight(self) -> int:
        return self._in_flight


# --- the workers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Computed:
    """One (unit, method) a worker finished, for the driver to commit."""

    method_id: str
    outcome: UnitOutcome
    result: ResultRecord | None
    backend_failure: bool
    """It failed because of a backend (counted towards `run.max_consecutive_backend_failures`)."""


class _KeepingRunner(_Runner):
    """A runner that keeps what it would commit, per unit, instead of writing it."""

    def __init__(self, config: ExperimentConfig, store: RunStore, dataset: str) -> None:
        super().__init__(config, store, False, dataset)
        self.kept: dict[UnitId, list[_Computed]] = {}

    def commit(self, method_id: str, outcome: UnitOutcome, result: ResultRecord | None,
               error: BaseException | None) -> None:
        computed = _Computed(method_id, outcome, result, isinstance(error, BackendError))
        self.kept.setdefault(outcome.unit, []).append(computed)


def _no_progress(_: int) -> None:
    pass


class RunWorker:
    """One Ray worker of a run (an async actor): its own backends, scorers and sources, any number of units."""

    def __init__(self, number: int, config: ExperimentConfig, run_dir: str, dataset: str, limits: Any) -> None:
        ray = require_ray()
        holder = (number, os.getpid())
        ray.get(limits.worker_started.remote(*holder))
        share_limits_beyond_process(lambda key, transport: _ClusterLimiter(limits, holder, key, transport))
        self.runner = _KeepingRunner(config, RunStore(run_dir), dataset)
        self.runner.build_components()

    def backend_ids(self) -> dict[str, str]:
        return {name: backend.name for name, backend in self.runner.backends.items()}

    async def run_unit(self, unit: UnitId, methods: Sequence[str]) -> list[_Computed]:
        await self.runner.run_unit(unit, methods, _no_progress)
        return self.runner.kept.pop(unit, [])

    async def close(self) -> None:
        await self.runner.close()


class RayWorkers:
    """Computes a run's units on Ray workers: an `Executor` for `run_experiment` / `arun_experiment`."""

    def __init__(self, address: str | None = None, *, workers: int | None = None, cpus_per_worker: float = 1,
                 gpus_per_worker: float = 0) -> None:
        """`address`: 'auto' (the cluster `ray start` made on this node), 'HOST:PORT', or None (a Ray instance of
        this machine; also when Ray is already initialized). `workers`: how many; None: as many as the cluster's
        CPUs (GPUs, with `gpus_per_worker`) hold. Each worker takes `cpus_per_worker` CPUs and `gpus_per_worker`
        GPUs and has up to `run.max_concurrent_units` units in flight."""
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if cpus_per_worker < 0 or gpus_per_worker < 0 or not cpus_per_worker + gpus_per_worker > 0:
            raise ConfigError("a Ray worker needs some CPUs or GPUs: --cpus-per-worker / --gpus-per-worker > 0")
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self._limits: Any = None
        self._config: Any = None
        self._actors: list[Any] = []

    def _count(self, ray: Any) -> int:
        if self.workers is not None:
            return self.workers
        resources = ray.cluster_resources()
        fits = [resources.get(name, 0.0) / need for name, need in (("CPU", self.cpus_per_worker),
                                                                    ("GPU", self.gpus_per_worker)) if need]
        return max(1, int(min(fits)))

    async def start(self, runner: _Runner) -> Mapping[str, str]:
        ray = connect(self.address)
        self._limits = ray.remote(_Limits).options(num_cpus=0, max_concurrency=LIMITS_CONCURRENCY).remote()
        worker = ray.remote(RunWorker).options(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                                               max_restarts=WORKER_RESTARTS, max_task_retries=WORKER_RESTARTS)
        self._config = ray.put(runner.config)  # held here, so a worker started again finds its arguments
        self._actors = [worker.remote(number, self._config, str(runner.store.path), runner.dataset, self._limits)
                        for number in range(self._count(ray))]
        backend_ids: list[dict[str, str]] = await asyncio.gather(*(_ask(a.backend_ids.remote()) for a in self._actors))
        return backend_ids[0]

    async def run(self, runner: _Runner, todo: Mapping[UnitId, Sequence[str]], bar: Callable[[int], None]) -> None:
        in_flight = [0] * len(self._actors)

        async def on_a_worker(unit: UnitId, methods: Sequence[str], bar: Callable[[int], None]) -> None:
            number = in_flight.index(min(in_flight))
            in_flight[number] += 1
            try:
                computed: list[_Computed] = await _ask(self._actors[number].run_unit.remote(unit, list(methods)))
            finally:
                in_flight[number] -= 1
            for done in computed:
                failure = BackendError(done.outcome.reason or "backend failure") if done.backend_failure else None
                runner.commit(done.method_id, done.outcome, done.result, failure)
                bar(1)

        await runner.run(todo, bar, run_unit=on_a_worker,
                         concurrency=runner.config.run.max_concurrent_units * len(self._actors))

    async def close(self, runner: _Runner) -> None:
        if not self._actors and self._limits is None:
            return
        ray = require_ray()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(a.close.remote() for a in self._actors), return_exceptions=True),
                                   CLOSE_TIMEOUT_S)
        for actor in [*self._actors, self._limits]:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self._actors, self._limits, self._config = [], None, None


async def _ask(reference: Any) -> Any:
    """The value of a Ray call: an error raised by a worker's code is raised here as itself, a worker lost for
    good becomes an error that says what to do."""
    ray = require_ray()
    try:
        return await reference
    except ray.exceptions.RayTaskError as error:
        raise error.as_instanceof_cause() from None
    except ray.exceptions.RayError as error:
        raise NeuroscribeError(
            f"a Ray worker of the run failed and was not recovered ({type(error).__name__}: {error}). Every unit "
            "finished before is saved; run the same command again to resume."
        ) from None


__all__ = ["RayWorkers", "RunWorker"]
