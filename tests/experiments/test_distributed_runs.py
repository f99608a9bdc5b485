"""Runs on a local Ray cluster (2 CPUs): the results of one process, whatever is killed, limits held across workers."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from quickstart_replay import quickstart_replay_config

from loopback_server import LoopbackServer
from neuroscribe.cli import main
from neuroscribe.experiments import RunStore, RunSummary, config_from_dict, run_experiment
from neuroscribe.experiments.distributed import RayWorkers, _ClusterLimiter, _Limits
from neuroscribe.llm.base import TransportSettings
from ray_cluster import TESTS, ray_cluster
from word_units import scripted_config, write_word_config, write_word_dataset

__all__ = ["ray_cluster"]
WORDS = dict(enumerate(["cat", "dog", "river", "money", "train", "bread", "snow", "gold", "apple", "chair", "cloud",
                        "horse", "lamp", "ocean", "piano", "queen", "stone", "tiger", "violin", "wheel"]))
RESPONDER = "explanation_following:slowly_follows_explanations"
VARYING = {"usage", "seconds"}
"""Model use and time depend on the cache and the machine; they are not results."""


@pytest.fixture(autouse=True)
def _garbage_collected_after() -> Iterator[None]:
    """Collect the Ray run's garbage at once: on CPython 3.11 a finalizer that formats a traceback (which
    parses source) run by a collection inside another `ast.parse` (pytest's assertion rewriting) fails that one
    with "AST constructor recursion depth mismatch" (CPython gh-106905)."""
    yield
    gc.collect()


def _results(run_dir: Path) -> dict[str, Any]:
    """Every method's results file (one line per unit, sorted: compacted) and its outcomes by unit, less `VARYING`."""
    store = RunStore(run_dir)
    out: dict[str, Any] = {}
    for method in store.methods():
        lines = [json.loads(line) for line in store.outcomes_path(method).read_text(encoding="utf-8").splitlines()]
        outcomes = {(o["unit"]["layer"], o["unit"]["index"]): {k: v for k, v in o.items() if k not in VARYING}
                    for o in lines}
        assert len(outcomes) == len(lines), f"{method}: a unit was committed twice"
        out[method] = (store.results_path(method).read_text(encoding="utf-8"), outcomes)
    return out


@pytest.fixture(scope="module")
def words_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 word units, explained and simulated by a scripted model that takes 20 ms a request, 2 units at a time."""
    root = tmp_path_factory.mktemp("ray-words")
    dataset = write_word_dataset(root / "words", WORDS)
    return write_word_config(root / "words.toml", dataset, RESPONDER, units=len(WORDS),
                             extra="[run]\nmax_concurrent_units = 2\nprogress = false\n")


@pytest.fixture(scope="module")
def one_process(words_config: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What one process makes of `words_config`."""
    run_dir = tmp_path_factory.mktemp("one-process") / "run"
    summary = run_experiment(words_config, run_dir)
    assert summary.failed == 0 and summary.completed == len(WORDS) * len(summary.methods)
    return _results(run_dir)


@pytest.mark.slow
def test_the_quickstart_on_two_workers_gives_the_results_of_one_process(
        ray_cluster: Any, quickstart_run: tuple[Path, RunSummary], tmp_path: Path) -> None:
    summary = run_experiment(quickstart_replay_config(tmp_path), tmp_path / "run", executor=RayWorkers(workers=2))
    assert (summary.completed, summary.failed, summary.usage.calls) == (24, 0, 0)  # every answer from the cache
    one_run, _ = quickstart_run
    assert _results(tmp_path / "run") == _results(one_run)
    backends = RunStore(tmp_path / "run").read_manifest()["backends"]
    assert backends == RunStore(one_run).read_manifest()["backends"]  # the ids the workers' backends reported


def _worker_pids() -> list[int]:
    """Processes of live Ray run workers (Ray titles an actor's process `ray::<class>`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"ray::RunWorker"):
                pids.append(int(entry.name))
    return pids


def _committed(run_dir: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in (run_dir / "outcomes").glob("*.jsonl"))


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_repeats_no_unit(ray_cluster: Any, words_config: Path,
                                                           one_process: dict[str, Any], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    total = sum(len(outcomes) for _, outcomes in one_process.values())
    killed: list[tuple[int, int]] = []

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 300
        while _committed(run_dir) < 2 * len(one_process) and time.monotonic() < deadline:
            time.sleep(0.01)
        pids = _worker_pids()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append((pids[0], _committed(run_dir)))

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    summary = run_experiment(words_config, run_dir, executor=RayWorkers(workers=2))
    killer.join()
    assert killed and killed[0][1] < total, "the worker was killed once the run had finished"
    assert (summary.completed, summary.failed) == (total, 0)
    assert _results(run_dir) == one_process


DRIVER = [sys.executable, "-m", "neuroscribe", "run", "--no-progress", "--workers", "2"]


@pytest.mark.slow
def test_a_killed_driver_resumes_to_the_results_of_an_uninterrupted_run(
        ray_cluster: Any, words_config: Path, one_process: dict[str, Any], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    address = ray_cluster.get_runtime_context().gcs_address
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([*DRIVER, str(words_config), "--out", str(run_dir), "--ray", address],
                              env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while _committed(run_dir) < 1:
        assert driver.poll() is None, driver.stderr.read().decode() if driver.stderr else "the driver stopped"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    total = sum(len(outcomes) for _, outcomes in one_process.values())
    before = _committed(run_dir)
    assert 0 < before < total, "the driver was killed once the run had finished"
    assert main(["run", str(words_config), "--out", str(run_dir), "--no-progress", "--ray", address]) == 0
    assert _results(run_dir) == one_process  # and no unit committed twice (checked by `_results`)


@pytest.mark.slow
def test_a_servers_concurrency_limit_holds_across_workers(ray_cluster: Any, tmp_path: Path) -> None:
    dataset = write_word_dataset(tmp_path / "words", dict(list(WORDS.items())[:6]))
    with LoopbackServer(delay_s=0.05) as server:
        data = scripted_config(dataset)
        data["units"] = {"refs": [f"0/{i}" for i in range(6)]}
        data["backends"] = {"default": {"type": "openai", "model": "loopback-model", "base_url": server.base_url,
                                        "transport": {"max_concurrency": 2, "max_retries": 0}}}
        data["run"] = {"progress": False, "max_concurrent_units": 3}  # 6 units in flight on 2 workers
        summary = run_experiment(config_from_dict(data), tmp_path / "run", executor=RayWorkers(workers=2))
        assert summary.attempted == 6 * len(summary.methods)
        assert len(server.posts()) >= 12
        assert server.max_in_flight == 2  # per worker, it would be up to 4


def test_slots_of_a_dead_worker_and_of_a_cancelled_wait_are_handed_back(ray_cluster: Any) -> None:
    limits = ray_cluster.remote(_Limits).options(num_cpus=0, max_concurrency=100).remote()
    one = TransportSettings(max_concurrency=1)

    def ask(holder: tuple[int, int], lease: str) -> Any:
        return limits.acquire.remote(holder, lease, "server", one, 0)

    ray_cluster.get([limits.worker_started.remote(0, 100), limits.worker_started.remote(1, 200)])
    ray_cluster.get(ask((0, 100), "held"), timeout=30)  # worker 0 holds the only slot, then dies
    waiting = ask((1, 200), "waiting")
    assert not ray_cluster.wait([waiting], timeout=0.5)[0]
    ray_cluster.get(limits.worker_started.remote(0, 101))  # Ray started worker 0 again
    ray_cluster.get(waiting, timeout=30)
    given_up = ask((0, 101), "given up")  # waits behind "waiting", then its asker is cancelled
    ray_cluster.get(limits.release.remote("given up", None))
    ray_cluster.get(limits.release.remote("waiting", None))
    ray_cluster.get([given_up, ask((1, 200), "next")], timeout=30)  # granted and at once handed back: free
    ray_cluster.kill(limits)


def test_an_error_in_a_workers_code_is_raised_by_the_driver_as_itself(ray_cluster: Any, word_dataset: Path,
                                                                      tmp_path: Path) -> None:
    data = scripted_config(word_dataset)
    data["backends"]["default"]["options"]["responder"] = "json:loads"  # TypeError: a request is not a str
    with pytest.raises(TypeError, match="JSON object must be str"):
        run_experiment(config_from_dict(data), tmp_path / "run", executor=RayWorkers(workers=1))


def test_a_servers_request_rate_is_one_budget_for_all_workers(ray_cluster: Any) -> None:
    limits = ray_cluster.remote(_Limits).options(num_cpus=0).remote()
    rate = TransportSettings(requests_per_minute=60)  # a burst of 10, then one a second

    class Barrier:
        """Lets its callers go once `n` have arrived (so both workers ask at once, not one after the other)."""

        def __init__(self, n: int) -> None:
            self.n, self.arrived, self.all_here = n, 0, asyncio.Event()

        async def arrive(self) -> None:
            self.arrived += 1
            if self.arrived == self.n:
                self.all_here.set()
            await self.all_here.wait()

    barrier = ray_cluster.remote(Barrier).options(num_cpus=0).remote(2)

    @ray_cluster.remote(num_cpus=1)
    def take(number: int, slots: int) -> float:
        limiter = _ClusterLimiter(limits, (number, os.getpid()), "server", rate)

        async def requests() -> float:
            await barrier.arrive.remote()
            started = time.monotonic()
            for _ in range(slots):
                async with limiter.slot(0):
                    pass
            return time.monotonic() - started

        return asyncio.run(requests())

    seconds = ray_cluster.get([take.remote(0, 6), take.remote(1, 6)], timeout=120)
    assert max(seconds) > 1.5  # 12 requests on a budget of 10: the last waited 2 s (per process: none did)
    for actor in (limits, barrier):
        ray_cluster.kill(actor)
