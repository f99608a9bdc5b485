"""Fault injection: run an experiment N times with one random fault each, resume, compare with a clean run.

Faults, drawn with the seed: `kill` (SIGKILL of `neuroscribe run` once a random number of results is
written), `torn` (a finished run's results or outcome file gets a line cut mid-JSON, or a middle line
garbled), `cache` (a kill, then garbage over the middle of the response cache), `disk` (the run
directory on a tmpfs too small for it, grown after the failure; needs root to mount, otherwise drawn as
`kill`). After the fault the same command
runs again until it exits 0 (at most 3 times), and every method's results are compared, unit by unit,
with an uninterrupted run: lost (a unit missing), duplicated (a unit with more than one results line) and
wrong (a result that differs beyond float rounding: see `TOLERANCE`; the quickstart also measures how far
two uninterrupted runs differ).

`--config words` (default) runs 8 synthetic units with a scripted model that follows explanations (the
real runner, store and cache; 20 ms per model call), fast enough for 50 trials; `--config quickstart`
runs experiments/quickstart.toml on the embedded model (about a minute per trial, its records collected
once and shared).

Usage: `.venv/bin/python benchmarks/fault_injection.py [--trials 50] [--config words|quickstart]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from neuroscribe.experiments import RunStore

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic word units and the scripted model live there
FAULTS = ("kill", "torn", "cache", "disk")
WORDS = {i: w for i, w in enumerate(["cat", "dog", "river", "money", "train", "bread", "snow", "gold"])}


@dataclass
class Trial:
    number: int
    fault: str
    detail: str
    resumes: int
    lost: int
    duplicated: int
    wrong: int
    seconds: float


def words_config(root: Path) -> Path:
    from word_units import write_word_config, write_word_dataset

    dataset = write_word_dataset(root / "words", WORDS)
    second = '[[simulators]]\nname = "all_at_once"\nid = "second"\noptions = { n_worked_examples = 1 }\n'
    return write_word_config(root / "words.toml", dataset, "explanation_following:slowly_follows_explanations",
                             units=len(WORDS), extra=second + "[run]\nmax_concurrent_units = 2\n")


def command(config: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "neuroscribe", "run", str(config), "--out", str(out), "--no-progress", *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}


def run(config: Path, out: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(config, out, extra), capture_output=True, text=True, env=environment(),
                          check=False, timeout=3600)


def results_written(out: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in (out / "results").glob("*.jsonl"))


def killed_part_way(config: Path, out: Path, extra: list[str], n_results: int, gap: float,
                    rng: random.Random) -> str:
    """SIGKILL once a drawn number of results is written, then up to half the mean `gap` between results
    later: drawn from the run's progress, not from wall time, so a loaded machine cannot push the kill
    past the end of the run."""
    process = subprocess.Popen(command(config, out, extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=environment())
    target, jitter = rng.randrange(1, n_results), rng.uniform(0.0, gap / 2)
    while process.poll() is None and results_written(out) < target:
        time.sleep(0.02)
    try:
        process.wait(timeout=jitter)
        return f"finished before the kill after {target} of {n_results} results"
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return f"SIGKILL after {results_written(out)} of {n_results} results (drawn {target}, +{jitter:.2f} s)"


def tear(out: Path, rng: random.Random) -> str:
    files = sorted([*(out / "results").glob("*.jsonl"), *(out / "outcomes").glob("*.jsonl")])
    path = rng.choice(files)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    number = rng.randrange(len(lines))
    if number == len(lines) - 1:
        lines[number] = lines[number][: rng.randrange(1, len(lines[number]) - 1)]
        what = "last line cut mid-JSON"
    else:
        cut = rng.randrange(1, len(lines[number]) - 1)
        lines[number] = lines[number][:cut] + "\x00garbage{" + lines[number][cut:]
        what = f"line {number + 1} garbled"
    path.write_text("".join(lines), encoding="utf-8")
    return f"{path.parent.name}/{path.name}: {what}"


def corrupt_cache(out: Path, rng: random.Random) -> str:
    files = [p for p in (out / "cache").glob("responses.sqlite*") if p.is_file() and p.stat().st_size > 0]
    if not files:
        return "no cache file yet"
    path = max(files, key=lambda p: p.stat().st_size)  # the database or its write-ahead log, whichever holds more
    size = path.stat().st_size
    start = rng.randrange(size // 4, max(size // 4 + 1, 3 * size // 4))
    with path.open("r+b") as handle:
        handle.seek(start)
        handle.write(os.urandom(min(8192, size - start)))
    return f"{path.name}: 8 KiB of garbage at byte {start} of {size}"


def mount(point: Path, size: str) -> bool:
    point.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True, check=False).returncode == 0


def compare(out: Path, reference: dict[str, dict[str, str]]) -> tuple[int, int, int]:
    store = RunStore(out)
    results = final_results(out)
    lost = duplicated = wrong = 0
    for method, expected in reference.items():
        found = results.get(method, {})
        lines = Counter(json.dumps(json.loads(line)["neuron_id"], sort_keys=True)
                        for line in store.results_path(method).read_text(encoding="utf-8").splitlines()
                        if line.strip())
        duplicated += sum(n - 1 for n in lines.values() if n > 1)
        lost += sum(unit not in found for unit in expected)
        wrong += sum(unit in found and not same_result(found[unit], text) for unit, text in expected.items())
    return lost, duplicated, wrong


TOLERANCE = 1e-4
"""Floats of two uninterrupted quickstart runs differ in their sixth or seventh digit: with two units in
flight, the order of requests decides which shared prefixes the hf backend finds computed, and a prefix
reused from its key/value cache rounds differently from one computed anew. A result is wrong when a float
differs by more than this (relative, or absolute below 1), or anything else (an explanation, a token, a
count) differs at all."""


def largest_difference(a: object, b: object) -> float:
    """The largest difference between the floats of two results of the same shape (relative, or absolute
    below 1); inf when anything but a float differs."""
    if isinstance(a, float) and isinstance(b, float):
        return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b), 1.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return math.inf if a.keys() != b.keys() else max((largest_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return math.inf if len(a) != len(b) else max(map(largest_difference, a, b), default=0.0)
    return 0.0 if a == b else math.inf


def same_result(found: str, expected: str) -> bool:
    return found == expected or largest_difference(json.loads(found), json.loads(expected)) <= TOLERANCE


def run_to_run_difference(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]]) -> tuple[int, float]:
    """How many results of two uninterrupted runs differ at all, and their largest difference."""
    differing = [largest_difference(json.loads(text), json.loads(b[m][u]))
                 for m, results in a.items() for u, text in results.items() if b.get(m, {}).get(u) != text]
    return len(differing), max(differing, default=0.0)


def _dumps(result: object) -> str:
    from neuroscribe.serialization import dumps

    return dumps(result)


def final_results(out: Path) -> dict[str, dict[str, str]]:
    store = RunStore(out)
    return {method: {str(u): json.dumps(json.loads(_dumps(r)), sort_keys=True)
                     for u, r in store.results(method).items()} for method in store.methods()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--config", choices=("words", "quickstart"), default="words")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "fault_injection.json")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="faults-"))
    extra: list[str] = []
    if args.config == "words":
        config = words_config(root)
    else:
        config = REPO / "experiments" / "quickstart.toml"
        extra = ["--set", f"records.collect.out={root / 'dataset'}"]
    started = time.monotonic()
    clean = run(config, root / "clean", extra)
    if clean.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{clean.stderr[-2000:]}")
    baseline_seconds = time.monotonic() - started
    if args.config == "quickstart":  # later trials collect nothing: time the run itself
        shutil.rmtree(root / "clean-timing", ignore_errors=True)
        started = time.monotonic()
        run(config, root / "clean-timing", extra)
        baseline_seconds = time.monotonic() - started
    reference = final_results(root / "clean")
    n_results = sum(len(v) for v in reference.values())
    print(f"uninterrupted run: {n_results} results in {baseline_seconds:.1f} s")
    n_differing, run_to_run = 0, 0.0
    if args.config == "quickstart":
        n_differing, run_to_run = run_to_run_difference(reference, final_results(root / "clean-timing"))
        print(f"a second uninterrupted run: {n_differing} of {n_results} results differ, by at most {run_to_run:.1e}; "
              f"a result is wrong beyond {TOLERANCE:g}")
    trials: list[Trial] = []
    can_mount = os.geteuid() == 0
    for number in range(args.trials):
        fault = rng.choice(FAULTS)
        out = root / f"trial-{number}"
        began = time.monotonic()
        mounted = False
        if fault == "disk" and can_mount and mount(out, f"{rng.randint(24, 160)}k"):
            mounted = True
            first = run(config, out, extra)
            detail = f"tmpfs full (exit {first.returncode})" if first.returncode else "the run fitted"
            subprocess.run(["mount", "-o", "remount,size=512m", str(out)], check=True)
        else:
            fault = "kill" if fault == "disk" else fault
            if fault == "torn":
                first = run(config, out, extra)
                detail = tear(out, rng)
            else:
                detail = killed_part_way(config, out, extra, n_results, baseline_seconds / n_results, rng)
                if fault == "cache":
                    detail += "; " + corrupt_cache(out, rng)
        resumes = 0
        while resumes < 3:
            resumes += 1
            if run(config, out, extra).returncode == 0:
                break
        lost, duplicated, wrong = compare(out, reference)
        trial = Trial(number=number, fault=fault, detail=detail, resumes=resumes, lost=lost, duplicated=duplicated,
                      wrong=wrong, seconds=time.monotonic() - began)
        trials.append(trial)
        print(f"{number:>3} {fault:<5} {detail:<60} resumes {resumes}  lost {lost}  duplicated {duplicated}  "
              f"wrong {wrong}  {trial.seconds:.1f} s", flush=True)
        if mounted:
            subprocess.run(["umount", "-l", str(out)], check=False)
        else:
            shutil.rmtree(out, ignore_errors=True)
    summary = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()}, "
                   f"Python {platform.python_version()})",
        "config": args.config, "trials": len(trials), "results_per_run": n_results,
        "run_to_run": {"results_differing": n_differing, "largest_relative_difference": run_to_run,
                       "tolerance": TOLERANCE},
        "faults": dict(Counter(t.fault for t in trials)),
        "lost": sum(t.lost for t in trials), "duplicated": sum(t.duplicated for t in trials),
        "wrong": sum(t.wrong for t in trials), "trials_detail": [asdict(t) for t in trials],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(trials)} faulted runs ({summary['faults']}), {n_results} results each: lost {summary['lost']}, "
          f"duplicated {summary['duplicated']}, wrong {summary['wrong']}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
