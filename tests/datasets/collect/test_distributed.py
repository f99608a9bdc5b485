"""Collection on a local Ray cluster gives the files of one process; saved shards are reused."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from neuroscribe.cli import main
from neuroscribe.datasets.collect import CollectConfig, collect
from neuroscribe.datasets.collect.collation import CollationSettings, StreamingCollator
from neuroscribe.datasets.collect.distributed import SHARDS_DIR, collect_on_ray, plan_shards, require_ray
from neuroscribe.errors import ConfigError
from ray_cluster import ray_cluster

__all__ = ["ray_cluster"]


def _config(model: Path, corpus: Path, out: Path) -> CollectConfig:
    return CollectConfig(out_dir=out, model=str(model), corpus=str(corpus), layers=(0, 2), excerpt_tokens=16,
                         batch_size=4, top_k=5, n_random=4, n_quantiles=2, n_per_quantile=2, quantile_pool=12,
                         lookup_tokens=5, seed=7, progress=False)


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.json"))
            if p.name != "dataset.json"}


def test_shards_are_aligned_blocks_of_batches(tiny_models: dict[str, Path], text_corpus: Path, tmp_path: Path) -> None:
    plan = plan_shards(_config(tiny_models["llama"], text_corpus, tmp_path), shards=4)
    assert [shard.first for shard in plan] == [shard.number * (plan[1].first - plan[0].first) for shard in plan]
    assert (plan[1].first // 4) & (plan[1].first // 4 - 1) == 0  # 2^m batches of 4 excerpts
    assert all(a.stop == b.first for a, b in itertools.pairwise(plan)) and 1 < len(plan) <= 4


def test_four_shards_on_two_workers_write_the_files_of_one_process(ray_cluster: Any, tiny_models: dict[str, Path],
                                                                   text_corpus: Path, tmp_path: Path) -> None:
    single = collect(_config(tiny_models["llama"], text_corpus, tmp_path / "single"))
    fields = _config(tiny_models["llama"], text_corpus, tmp_path / "ray").to_json_obj()
    toml = tmp_path / "collect.toml"
    toml.write_text("".join(f"{key} = {json.dumps(fields[key])}\n" for key in (
        "model", "corpus", "out_dir", "layers", "excerpt_tokens", "batch_size", "top_k", "n_random", "n_quantiles",
        "n_per_quantile", "quantile_pool", "lookup_tokens", "seed")), encoding="utf-8")
    assert main(["collect", "--config", str(toml), "--no-progress", "--ray", "--shards", "4"]) == 0
    expected = _files(single)
    assert len(expected) > 20 and _files(tmp_path / "ray") == expected
    assert not (tmp_path / "ray" / SHARDS_DIR).exists()


def test_without_ray_the_error_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'neuroscribe\[ray\]'"):
        require_ray()


DRIVER = """
import sys
from pathlib import Path
import ray
from neuroscribe.datasets.collect import CollectConfig
from neuroscribe.datasets.collect.distributed import collect_on_ray
ray.init(address=sys.argv[1], log_to_driver=False)
collect_on_ray(CollectConfig(**eval(sys.argv[2])), shards=8)
"""


@pytest.mark.slow
def test_a_killed_driver_resumes_from_its_finished_shards(ray_cluster: Any, tiny_models: dict[str, Path],
                                                          text_corpus: Path, tmp_path: Path) -> None:
    single = collect(_config(tiny_models["llama"], text_corpus, tmp_path / "single"))
    config = _config(tiny_models["llama"], text_corpus, tmp_path / "ray")
    fields = {**config.to_json_obj(), "unit_kind": config.unit_kind.value}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, ray_cluster.get_runtime_context().gcs_address,
                               repr(fields)])
    shards = config.out_dir / SHARDS_DIR
    deadline = time.monotonic() + 120
    while not list(shards.glob("*.pt")) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = sorted(path.name for path in shards.glob("*.pt"))
    assert finished and not (config.out_dir / "dataset.json").exists()
    assert _files(collect_on_ray(config, shards=8)) == _files(single)


def test_merging_in_the_wrong_order_is_refused() -> None:
    settings = CollationSettings(top_k=2, n_random=1, n_quantiles=1, n_per_quantile=1, quantile_pool=2)

    def collator(batches: int) -> StreamingCollator:
        out = StreamingCollator(settings, n_units=1, n_positions=1, excerpt_tokens=1, vocab_size=None)
        for i in range(batches):
            out.update(torch.rand(1, 1, 1), torch.zeros(1, 1), torch.tensor([i]), torch.tensor([[i, 0]]))
        return out

    with pytest.raises(Exception, match="aligned blocks"):
        collator(1).merge(collator(2))
