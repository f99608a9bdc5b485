"""The experiment runner: records -> explanation source -> scorers -> results, for every unit and method.

A method is an explanation source (an explainer, or a control) and a scorer. The runner only routes:
it asks each source for its explanation (once per unit, shared by the scorers), has the evidence
builder make what each component declared, hands it over, and commits what comes back. It never
looks at which explainer, scorer or control it is talking to.

Units run concurrently (up to `run.max_concurrent_units`); model calls are further limited by each
backend's shared transport limits. Every finished (unit, method) is committed to the run directory at
once, so a killed run loses only what was in flight, and running the same command again does only what
is missing. Failures are committed too, with the stage and the reason, and retried by the next run
unless `skip_failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from neuroscribe.errors import BackendError, ConfigError, DataError, NeuroscribeError, StageError
from neuroscribe.experiments.config import ExperimentConfig, load_config
from neuroscribe.experiments.evidence import EvidenceBuilder, split_disjointness
from neuroscribe.experiments.manifest import open_run, update_manifest
from neuroscribe.experiments.plan import Plan, Shard, check_units_exist, make_plan, pending_units
from neuroscribe.experiments.sources import ExplanationSource, SourceContext, Sourced, build_sources
from neuroscribe.experiments.store import REPEATS_DIR, RunStore, UnitOutcome, UnitUsage, now_iso
from neuroscribe.llm.base import Backend, BackendSpec, TransportSettings
from neuroscribe.llm.usage import UsageLedger, UsageTotals
from neuroscribe.records import UnitId
from neuroscribe.results import ResultRecord
from neuroscribe.scorers import Scorer, ScorerOutput, create_scorer

logger = logging.getLogger(__name__)
T = TypeVar("T")
UnitWork = Callable[[UnitId, Sequence[str], Callable[[int], None]], Awaitable[None]]
"""Does the given methods of one unit, committing each (unit, method) and advancing the bar by one per method."""


# --- the summary -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """What one `run_experiment` call did (this process, this shard)."""

    run_dir: Path
    methods: tuple[str, ...]
    units: int
    """Units of this shard."""
    completed: int
    """(unit, method) pairs finished now."""
    failed: int
    """(unit, method) pairs that failed now (recorded with reasons, retried by the next run)."""
    already_done: int
    """(unit, method) pairs found finished in the run directory and skipped."""
    usage: UnitUsage
    seconds: float
    attempted: int = 0
    """(unit, method) pairs this call set out to do (planned = units x methods = attempted + already done)."""
    repeats: int = 1
    """Repeats of the experiment the counts add up (see `run_experiment`)."""

    @property
    def planned(self) -> int:
        return self.attempted + self.already_done

    @property
    def nothing_succeeded(self) -> bool:
        """Work was attempted and none of it finished (the command should say so and exit non-zero)."""
        return self.attempted > 0 and self.completed == 0

    def to_text(self) -> str:
        repeats = f" x {self.repeats} repeats" if self.repeats > 1 else ""
        not_reached = self.attempted - self.completed - self.failed
        stopped = f", {not_reached} not reached (the run stopped)" if not_reached > 0 else ""
        return (
            f"{self.run_dir}: {self.planned} planned ({self.units} units x {len(self.methods)} methods{repeats}): "
            f"{self.already_done} already done, {self.attempted} attempted: {self.completed} finished, "
            f"{self.failed} failed{stopped}; {self.usage.calls} model calls, "
            f"{self.usage.cache_hits} cache hits, {self.usage.prompt_tokens} + {self.usage.completion_tokens} tokens, "
            f"${self.usage.cost_usd:.4f}, {self.seconds:.1f} s"
        )


# --- running ---------------------------------------------------------------------------------------


class _Failure(Exception):
    """A unit's method failed at `stage` because of `error` (always a NeuroscribeError)."""

    def __init__(self, stage: str, error: NeuroscribeError) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error
        self.usage = UnitUsage()
        """Model use spent before it failed (a failed shared explanation), counted once by `claim`."""
        self.claimed = False

    def claim(self) -> UnitUsage:
        if self.claimed:
            return UnitUsage()
        self.claimed = True
        return self.usage


@dataclass
class _Explained:
    """A memoized explanation and the model use it cost, counted once for whoever claims it first."""

    sourced: Sourced
    usage: UnitUsage
    claimed: bool = False

    def claim(self) -> UnitUsage:
        if self.claimed:
            return UnitUsage()
        self.claimed = True
        return self.usage


def _usage_of(totals: UsageTotals) -> UnitUsage:
    return UnitUsage(calls=totals.calls, cache_hits=totals.cache_hits, prompt_tokens=totals.prompt_tokens,
                     completion_tokens=totals.completion_tokens, cost_usd=totals.cost_usd)


async def _stage(stage: str, work: Awaitable[T]) -> T:
    try:
        return await work
    except StageError as error:
        raise _Failure(error.stage, error.error) from error
    except NeuroscribeError as error:
        raise _Failure(stage, error) from error


class _Runner:
    def __init__(self, config: ExperimentConfig, store: RunStore, progress: bool | None, dataset: str) -> None:
        self.config = config
        self.store = store
        self.show_progress = config.run.progress if progress is None else progress
        self.dataset = dataset
        self.methods = config.methods()
        self.evidence = EvidenceBuilder(config, store, dataset)
        self.ledger = UsageLedger()
        self.backends: dict[str, Backend] = {}
        self.sources: dict[str, ExplanationSource] = {}
        self.scorers: dict[str, Scorer] = {}
        self._explanations: dict[tuple[str, UnitId], asyncio.Task[_Explained]] = {}
        self._consecutive_backend_failures = 0
        self._abort: NeuroscribeError | None = None
        self._untracked = contextvars.copy_context()
        self.completed = self.failed = 0
        self.usage = UnitUsage()

    # components -------------------------------------------------------------------------------

    def build_components(self) -> None:
        from neuroscribe.llm import create_backend

        cache_dir = Path(self.config.run.cache_dir) if self.config.run.cache_dir else self.store.path / "cache"
        used = {e.backend for _, e, _ in self.config.explainer_configs()}
        used |= {s.backend for _, s in self.config.scorer_configs()}
        built: dict[tuple[BackendSpec, TransportSettings, str], Backend] = {}  # identical tables share one model
        for name in sorted(used):
            backend = self.config.backends[name]
            key = (backend.spec, backend.transport, repr(sorted(backend.options.items())))
            if key not in built:
                built[key] = create_backend(backend.spec, backend.transport, cache_dir=cache_dir, ledger=self.ledger,
                                            options=backend.options, sampling_salt=self.config.repeat)
            self.backends[name] = built[key]
        for _, scorer in self.config.scorer_configs():
            self.scorers[scorer.label] = create_scorer(scorer.name, self.backends[scorer.backend], scorer.options)
        self.sources = build_sources(self.config, self.backends, self.scorers, self.dataset)

    async def close(self) -> None:
        for backend in {id(b): b for b in self.backends.values()}.values():
            with contextlib.suppress(Exception):
                await backend.aclose()

    # explanations -----------------------------------------------------------------------------

    def _background(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A shared task, started outside any method's usage tracking, so its model use is counted once
        (by `_Explained.claim`) instead of also by whichever method happened to start it."""
        return asyncio.get_running_loop().create_task(work, context=self._untracked.copy())

    def explanation(self, source: str, unit: UnitId) -> asyncio.Task[_Explained]:
        """The explanation of `unit` by source `source`, computed once per run process."""
        key = (source, unit)
        if key not in self._explanations:
            self._explanations[key] = self._background(self._explain(source, unit))
        return self._explanations[key]

    async def _explanation_text(self, source: str, unit: UnitId) -> str:
        try:
            return (await self.explanation(source, unit)).sourced.text
        except _Failure as failure:
            raise failure.error from failure

    async def _explain(self, source: str, unit: UnitId) -> _Explained:
        context = SourceContext(evidence=self.evidence, explanation_of=self._explanation_text)
        with UsageLedger.track() as tracker:
            try:
                sourced = await _stage("explain", self.sources[source].explain(unit, context))
            except _Failure as failure:  # what the failed explanation cost is still spent
                failure.usage = _usage_of(tracker.totals)
                raise
        return _Explained(sourced=sourced, usage=_usage_of(tracker.totals))

    # one unit, one method ----------------------------------------------------------------------

    async def run_method(self, unit: UnitId, method_id: str) -> None:
        source, scorer_label = self.methods[method_id]
        scorer = self.scorers[scorer_label]
        started = time.monotonic()
        explanation: str | None = None
        sourced = Sourced(text="")
        usage = UnitUsage()
        with UsageLedger.track() as tracker:
            try:
                if source is not None:
                    explained = await self.explanation(source, unit)
                    sourced = explained.sourced
                    explanation = sourced.text
                    usage = explained.claim()
                inputs = await _stage("records", self.evidence.scorer_input(unit, explanation or "",
                                                                            type(scorer).evidence))
                output: ScorerOutput = await _stage("score", scorer.score(inputs))
            except _Failure as failure:
                outcome = UnitOutcome(unit=unit, status="failed", stage=failure.stage, reason=str(failure.error),
                                      explanation=explanation,
                                      usage=usage + failure.claim() + _usage_of(tracker.totals),
                                      seconds=time.monotonic() - started)
                self.commit(method_id, outcome, None, failure.error)
                return
        outcome = UnitOutcome(unit=unit, status="ok", explanation=explanation,
                              scores=dict(output.scores.get(output.headline, {})),
                              named_scores={name: dict(v) for name, v in output.scores.items()},
                              headline=output.headline, calibrated=output.calibrated,
                              usage=usage + _usage_of(tracker.totals), seconds=time.monotonic() - started,
                              candidates=sourced.candidates, selection=sourced.selection,
                              undefined={name: dict(v) for name, v in output.reasons.items()})
        self.commit(method_id, outcome, output.result, None)

    def commit(self, method_id: str, outcome: UnitOutcome, result: ResultRecord | None,
               error: BaseException | None) -> None:
        try:
            self.store.append(method_id, outcome, result)
        except OSError as write_error:
            self._abort = DataError(
                f"cannot write results to {self.store.path} ({write_error}). Every unit finished before this one "
                "is saved; free space or fix the directory, then run the same command again to resume."
            )
            raise self._abort from write_error
        self.usage = self.usage + outcome.usage
        if outcome.status == "ok":
            self.completed += 1
            self._consecutive_backend_failures = 0
            return
        self.failed += 1
        logger.warning("%s %s failed at %s: %s", method_id, outcome.unit, outcome.stage, outcome.reason)
        if isinstance(error, BackendError):
            self._consecutive_backend_failures += 1
            limit = self.config.run.max_consecutive_backend_failures
            if limit and self._consecutive_backend_failures >= limit and self._abort is None:
                self._abort = BackendError(
                    f"stopped after {self._consecutive_backend_failures} backend failures in a row; the last: "
                    f"{outcome.reason}. Finished units are saved in {self.store.path}; fix the backend and run "
                    "the same command again to resume (failed units are retried)."
                )
        else:
            self._consecutive_backend_failures = 0

    async def run_unit(self, unit: UnitId, methods: Sequence[str], bar: Callable[[int], None]) -> None:
        for method_id in methods:
            if self._abort is not None:
                return
            await self.run_method(unit, method_id)
            bar(1)
        self.evidence.forget(unit)  # done with it (a later need reads RUN/records); bounds memory

    async def run(self, todo: Mapping[UnitId, Sequence[str]], bar: Callable[[int], None], *,
                  run_unit: UnitWork | None = None, concurrency: int | None = None) -> None:
        """Do `todo`, `concurrency` units at a time (default `run.max_concurrent_units`), each by `run_unit`
        (default: here, `self.run_unit`; a distributed run hands units to workers and commits what they return)."""
        semaphore = asyncio.Semaphore(concurrency or self.config.run.max_concurrent_units)
        work = run_unit or self.run_unit

        async def one_unit(unit: UnitId, methods: Sequence[str]) -> None:
            async with semaphore:
                await work(unit, methods, bar)

        tasks: list[asyncio.Future[None]] = [asyncio.ensure_future(one_unit(u, m)) for u, m in todo.items()]
        try:
            while tasks:
                done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # re-raise a write failure or a bug
                if self._abort is not None:
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    raise self._abort
                tasks = list(pending)
        finally:
            background: list[asyncio.Future[Any]] = [*self.evidence.pending(), *self._explanations.values()]
            for future in background:
                future.cancel()
            await asyncio.gather(*background, return_exceptions=True)


class Executor(Protocol):
    """Where a run's units are computed: in this process (`InProcess`, the default) or by workers elsewhere
    (`experiments.distributed.RayWorkers`). Whatever computes them, this process's runner commits every result,
    so the run directory has one writer per run process and resume works as for one process."""

    async def start(self, runner: _Runner) -> Mapping[str, str]:
        """Build the backends, scorers and sources of `runner.config`; returns backend name -> backend id."""
        ...

    async def run(self, runner: _Runner, todo: Mapping[UnitId, Sequence[str]], bar: Callable[[int], None]) -> None:
        """Do `todo` (unit -> its pending methods), committing each result through `runner.commit`."""
        ...

    async def close(self, runner: _Runner) -> None:
        """Release what `start` built (also after a failed or aborted run)."""
        ...


class InProcess:
    """Units computed by this process's event loop (`run.max_concurrent_units` at a time)."""

    async def start(self, runner: _Runner) -> Mapping[str, str]:
        runner.build_components()
        return {name: backend.name for name, backend in runner.backends.items()}

    async def run(self, runner: _Runner, todo: Mapping[UnitId, Sequence[str]], bar: Callable[[int], None]) -> None:
        await runner.run(todo, bar)

    async def close(self, runner: _Runner) -> None:
        await runner.close()


# --- collection --------------------------------------------------------------------------------------


def _collect_records(config: ExperimentConfig, store: RunStore) -> str:
    """Collect the records the config asks for (once; a finished collection is reused) and name the dataset."""
    collect_settings = config.records.collect
    assert collect_settings is not None
    from neuroscribe.datasets import MANIFEST_NAME
    from neuroscribe.datasets.collect import AUTOENCODERS_INDEX, CollectConfig, collect
    from neuroscribe.registry import build_options

    out = Path(collect_settings.out) if collect_settings.out else store.path / "dataset"
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in collect_settings.options.items()}
    units = config.units.resolve(config.seed)  # by default, collect exactly the units the run needs
    options.setdefault("layers", tuple(sorted({u.layer for u in units})))
    options.setdefault("indices", tuple(sorted({u.index for u in units})))
    options.setdefault("unit_kind", config.units.kind)
    collect_config = build_options(CollectConfig, {**options, "out_dir": out}, "[records.collect.options]")
    with store.locked():  # one shard collects, the others wait and then find it done
        collect(collect_config)
    written = AUTOENCODERS_INDEX if collect_config.saes else MANIFEST_NAME
    if not (out / written).is_file():
        raise DataError(f"the collection into {out} finished without writing {written}")
    return str(out)


# --- entry points ------------------------------------------------------------------------------------


async def arun_experiment(config: ExperimentConfig, out_dir: str | Path, *, shard: Shard | None = None,
                          skip_failed: bool = False, progress: bool | None = None, source: str | None = None,
                          overrides: Sequence[str] = (), executor: Executor | None = None) -> RunSummary:
    """The async form of `run_experiment` (for callers that already run an event loop)."""
    started = time.monotonic()
    executor = executor or InProcess()
    shard = shard or Shard()
    store = RunStore(out_dir)
    dataset = config.records.dataset
    if config.records.collect is None:
        check_units_exist(config, dataset)
    open_run(store, config, source, overrides, shard)
    if config.records.collect is not None:
        dataset = await asyncio.to_thread(_collect_records, config, store)
        check_units_exist(config, dataset)
    update_manifest(store, shard, disjointness=split_disjointness(config, dataset))
    units = shard.select(config.units.resolve(config.seed))
    methods = config.method_ids()
    todo: dict[UnitId, list[str]] = {}
    already_done = 0
    for method in methods:
        pending = set(pending_units(store, method, units, skip_failed))
        already_done += len(units) - len(pending)
        for unit in units:
            if unit in pending:
                todo.setdefault(unit, []).append(method)
    runner = _Runner(config, store, progress, dataset)
    if todo:
        backend_ids = await executor.start(runner)
        update_manifest(store, shard, backends={name: {"id": backend_id} for name, backend_id in backend_ids.items()})
    total = sum(len(m) for m in todo.values())
    from tqdm import tqdm

    with tqdm(total=total, desc=config.name, unit="result", disable=not runner.show_progress or not total,
              file=sys.stderr, dynamic_ncols=True) as bar:

        def advance(n: int) -> None:
            bar.update(n)
            bar.set_postfix(failed=runner.failed, calls=runner.usage.calls,
                            tokens=runner.usage.prompt_tokens + runner.usage.completion_tokens,
                            cost=f"${runner.usage.cost_usd:.3f}", refresh=False)

        try:
            await executor.run(runner, todo, advance)
        finally:
            await executor.close(runner)
            with contextlib.suppress(OSError, NeuroscribeError):
                store.compact()
                update_manifest(store, shard, shard_entry={"finished": now_iso(), "completed": runner.completed,
                                                            "failed": runner.failed})
    return RunSummary(run_dir=store.path, methods=tuple(methods), units=len(units), completed=runner.completed,
                      failed=runner.failed, already_done=already_done, usage=runner.usage,
                      seconds=time.monotonic() - started, attempted=total)


def repeated(config: ExperimentConfig, repeat: int, run_dir: Path) -> ExperimentConfig:
    """Repeat `repeat` of `config` (run in RUN/repeats/<repeat>): the same records (a collection made by
    repeat 0 is read from RUN, never collected again) and the same response cache, other sampling seeds."""
    records = config.records
    if records.collect is not None and not records.collect.out:
        records = dataclasses.replace(records, collect=dataclasses.replace(records.collect,
                                                                           out=str(run_dir / "dataset")))
    run = config.run
    if not run.cache_dir:
        run = dataclasses.replace(run, cache_dir=str(run_dir / "cache"))
    return dataclasses.replace(config, repeat=repeat, records=records, run=run)


def run_experiment(config_path_or_config: str | Path | ExperimentConfig, out_dir: str | Path,
                   overrides: Sequence[str] = (), *, shard: Shard | str | None = None, skip_failed: bool = False,
                   progress: bool | None = None, repeats: int = 1, executor: Executor | None = None) -> RunSummary:
    """Run (or resume) an experiment into `out_dir`; the one synchronous entry point.

    `overrides` are `key=value` strings as for `neuroscribe run --set`; with a config object they
    must be empty (apply them when building it). `repeats` > 1 runs the experiment again with other
    sampling seeds into `out_dir/repeats/1 ...` (see `repeated`); the summary adds them up. `executor`
    says where units are computed (default: this process; `experiments.distributed.RayWorkers`: a Ray cluster).
    """
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}")
    if isinstance(config_path_or_config, ExperimentConfig):
        if overrides:
            raise ConfigError("overrides apply to a config file; build the ExperimentConfig with them instead")
        config, source = config_path_or_config, None
    else:
        config, source = load_config(config_path_or_config, overrides), str(config_path_or_config)
    if config.repeat:
        raise ConfigError("the config sets `repeat`; run it with repeats instead (repeat 0 is the run itself)")
    chosen = Shard.parse(shard) if isinstance(shard, str) else (shard or Shard())
    summaries = [asyncio.run(arun_experiment(
        config if r == 0 else repeated(config, r, Path(out_dir)),
        out_dir if r == 0 else Path(out_dir) / REPEATS_DIR / str(r),
        shard=chosen, skip_failed=skip_failed, progress=progress, source=source, overrides=overrides,
        executor=executor,
    )) for r in range(repeats)]
    first = summaries[0]
    return dataclasses.replace(
        first, completed=sum(s.completed for s in summaries), failed=sum(s.failed for s in summaries),
        already_done=sum(s.already_done for s in summaries), seconds=sum(s.seconds for s in summaries),
        attempted=sum(s.attempted for s in summaries),
        usage=sum((s.usage for s in summaries[1:]), first.usage), repeats=repeats)


__all__ = ["Executor", "InProcess", "Plan", "RunSummary", "Shard", "arun_experiment", "make_plan", "run_experiment"]
