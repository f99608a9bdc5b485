"""Experiment runs on Ray: one process against 2 workers, same results, and what a shared limit costs a request.

1. The synthetic word units (tests/word_units.py), explained and simulated by a scripted model that takes
   `--delay` seconds a request (a stand-in for a server's latency, no CPU), `run.max_concurrent_units` 2:
   wall time in one process, then on a local Ray cluster of 2 workers (each 2 units in flight), results checked
   identical. The speed-up is bounded by 2 (twice the units in flight); Ray's start-up (workers, backends) is
   included, so it needs enough units to pay for it.
2. The cost per request of a limit held by the run's limits actor: `--requests` slots taken and handed back
   one after another by one worker's client, against the same with the process's own limiter.

    .venv/bin/python benchmarks/bench_ray_run.py                   # full: 64 units, 200 ms a request
    .venv/bin/python benchmarks/bench_ray_run.py --units 16 --requests 100   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the word units and the scripted model live there


def words(n: int) -> dict[int, str]:
    """n distinct content words ('cat', 'dog', ... then made-up ones)."""
    base = ["cat", "dog", "river", "money", "train", "bread", "snow", "gold", "apple", "chair", "cloud", "horse"]
    return {i: base[i] if i < len(base) else f"word{i}x" for i in range(n)}


def slow_responder_module(root: Path, delay: float) -> str:
    """A module (on sys.path of the driver and, through PYTHONPATH, of Ray's workers) whose responder waits
    `delay` seconds and then answers as explanation_following.follows_explanations."""
    (root / "bench_slow_model.py").write_text(
        "import asyncio\nfrom explanation_following import follows_explanations\n\n\n"
        f"async def respond(request):\n    await asyncio.sleep({delay!r})\n    return follows_explanations(request)\n")
    return "bench_slow_model:respond"


def results(run_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((run_dir / "results").glob("*.jsonl"))}


async def slot_seconds(limiter: object, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        async with limiter.slot(0):  # type: ignore[attr-defined]
            pass
    return (time.perf_counter() - started) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the scripted model takes a request")
    parser.add_argument("--requests", type=int, default=1000, help="slots taken for the per-request cost")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ray-run-"))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(root), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(root))
    try:
        import ray

        from neuroscribe.experiments import run_experiment
        from neuroscribe.experiments.distributed import RayWorkers, _ClusterLimiter, _Limits
        from neuroscribe.llm.base import TransportSettings
        from neuroscribe.llm.limits import Limiter
        from word_units import write_word_config, write_word_dataset

        dataset = write_word_dataset(root / "words", words(args.units))
        config = write_word_config(root / "words.toml", dataset, slow_responder_module(root, args.delay),
                                   units=args.units, extra="[run]\nmax_concurrent_units = 2\nprogress = false\n")
        started = time.perf_counter()
        one = run_experiment(config, root / "one")
        one_s = time.perf_counter() - started
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter()
        two = run_experiment(config, root / "two", executor=RayWorkers(workers=2))
        two_s = time.perf_counter() - started

        transport = TransportSettings(max_concurrency=8)
        limits = ray.remote(_Limits).options(num_cpus=0).remote()
        ray.get(limits.worker_started.remote(0, os.getpid()))
        shared = asyncio.run(slot_seconds(_ClusterLimiter(limits, (0, os.getpid()), "bench", transport),
                                          args.requests))
        local = asyncio.run(slot_seconds(Limiter(transport), args.requests))
        report = {
            "units": args.units, "delay_s": args.delay, "methods": len(one.methods),
            "one_process_s": round(one_s, 2), "ray_2_workers_s": round(two_s, 2),
            "speedup_2_workers": round(one_s / two_s, 2),
            "finished": [one.completed, two.completed], "identical_results": results(root / "one") == results(
                root / "two"),
            "slot_ms_limits_actor": round(shared * 1000, 3), "slot_ms_in_process": round(local * 1000, 4),
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
