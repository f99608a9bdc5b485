"""Fixtures for the dataset tests: an isolated cache, a loopback HTTP mirror, generated files of every kind.

The real GPT-2 XL record (tests/data/refdata/mirror) is the only real published file at hand; every other
kind is generated here in the same layout from it, so each catalog entry is read end to end.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from neuroscribe.datasets import DATASETS, Artifact
from neuroscribe.datasets.cache import DatasetCache
from neuroscribe.records import ActivationRecord, NeuronId, NeuronRecord, TokenPairRecord, n_pairs
from neuroscribe.results import (
    ActivationScale,
    NeuronSimulationResults,
    ScoredExplanation,
    ScoredSequenceSimulation,
    ScoredSimulation,
    SequenceSimulation,
    TokenLookupTableSummaryOfNeuron,
    TokensAndWeights,
    WeightBasedSummaryOfNeuron,
)
from neuroscribe.serialization import dumps, load_json_file, to_json_obj

GENERATED_LAYER = 2
GENERATED_INDEX = 9
"""Every generated file describes this unit, which exists in every catalog dataset."""


@pytest.fixture
def dataset_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DatasetCache:
    """A fresh cache directory and no data root, so a test never sees the user's cache or settings."""
    monkeypatch.setenv("NEUROSCRIBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NEUROSCRIBE_DATA_ROOT", raising=False)
    monkeypatch.delenv("NEUROSCRIBE_OFFLINE", raising=False)
    return DatasetCache()


@pytest.fixture(scope="session")
def real_record(real_record_path: Path) -> NeuronRecord:
    return load_json_file(real_record_path, NeuronRecord)


def small_record(real: NeuronRecord, *, layer: int, index: int, token_pairs: bool = False) -> NeuronRecord:
    """Two top and two random excerpts of the real record, relabelled; token-pair shaped if asked."""

    def shaped(record: ActivationRecord) -> ActivationRecord:
        tokens = record.tokens[:8]
        if not token_pairs:
            return ActivationRecord(tokens=tokens, activations=record.activations[:8])
        return TokenPairRecord(tokens=tokens, activations=[round(0.01 * i, 4) for i in range(n_pairs(len(tokens)))])

    return NeuronRecord(
        neuron_id=NeuronId(layer_index=layer, neuron_index=index),
        most_positive_activation_records=[shaped(r) for r in real.most_positive_activation_records[:2]],
        random_sample=[shaped(r) for r in real.random_sample[:2]],
        mean=real.mean,
        variance=real.variance,
    )


def explanation_results(layer: int, index: int) -> NeuronSimulationResults:
    simulation = SequenceSimulation(
        tokens=["a", "b"], expected_activations=[0.5, 1.5],
        activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
        distribution_values=[[0.0, 1.0], [1.0, 2.0]], distribution_probabilities=[[0.5, 0.5], [0.5, 0.5]],
    )
    scored = ScoredSimulation(
        scored_sequence_simulations=[ScoredSequenceSimulation(simulation=simulation, true_activations=[0.0, 2.0])],
        ev_correlation_score=1.0,
    )
    return NeuronSimulationResults(
        neuron_id=NeuronId(layer_index=layer, neuron_index=index),
        scored_explanations=[ScoredExplanation(explanation="the letter b", scored_simulation=scored)],
    )


TOKEN_LOOKUP = TokenLookupTableSummaryOfNeuron(tokens=[" cat", " dog"], average_activations=[2.5, 1.25])
WEIGHT_SUMMARY = WeightBasedSummaryOfNeuron(
    input_positive=TokensAndWeights(tokens=[" up"], strengths=[0.9]),
    input_negative=TokensAndWeights(tokens=[" down"], strengths=[-0.8]),
    output_positive=TokensAndWeights(tokens=[" left"], strengths=[0.7]),
    output_negative=TokensAndWeights(tokens=[" right"], strengths=[-0.6]),
)
RELATED_NEURONS = {
    "c_fc": {"top_positive_neurons": ["0_5", "1_7"], "top_positive_weights": [0.4, 0.3]},
    "c_proj": None,
}


def _tensorized(record: NeuronRecord) -> dict[str, object]:
    """The record's JSON schema with every activation list as a tensor: the shape we accept in `.pt` files."""
    import torch

    data = to_json_obj(record)
    for key in ("most_positive_activation_records", "random_sample"):
        for item in data[key]:
            item["activations"] = torch.tensor(item["activations"], dtype=torch.float32)
    return data


RecordFactory = Callable[..., NeuronRecord]
"""(layer=, index=, token_pairs=False) -> a small record cut from the real one."""


@pytest.fixture(scope="session")
def make_record(real_record: NeuronRecord) -> RecordFactory:
    def make(*, layer: int, index: int, token_pairs: bool = False) -> NeuronRecord:
        return small_record(real_record, layer=layer, index=index, token_pairs=token_pairs)

    return make


@pytest.fixture(scope="session")
def make_explanations() -> Callable[[int, int], NeuronSimulationResults]:
    return explanation_results


@dataclass
class GeneratedMirror:
    root: Path
    layer: int
    index: int
    """Mirror root in the public layout, holding one file per (dataset, artifact)."""
    expected: dict[tuple[str, Artifact], object] = field(default_factory=dict)
    """What loading each file must give back."""


@pytest.fixture(scope="session")
def generated_mirror(tmp_path_factory: pytest.TempPathFactory, real_record: NeuronRecord) -> GeneratedMirror:
    import torch

    mirror = GeneratedMirror(root=tmp_path_factory.mktemp("mirror"), layer=GENERATED_LAYER, index=GENERATED_INDEX)
    for spec in DATASETS.values():
        for artifact, template in spec.templates.items():
            path = mirror.root / template.format(layer=GENERATED_LAYER, index=GENERATED_INDEX)
            path.parent.mkdir(parents=True, exist_ok=True)
            expected: object
            if artifact is Artifact.ACTIVATIONS:
                expected = small_record(real_record, layer=GENERATED_LAYER, index=GENERATED_INDEX,
                                        token_pairs=spec.by_token_pair)
                if path.suffix == ".pt":
                    torch.save(_tensorized(expected), path)
                else:
                    path.write_text(dumps(expected))
            elif artifact is Artifact.EXPLANATIONS:
                expected = [explanation_results(GENERATED_LAYER, GENERATED_INDEX)]
                path.write_text(dumps(expected[0]) + "\n")
            elif artifact is Artifact.RELATED_NEURONS:
                expected = RELATED_NEURONS
                path.write_text(dumps(expected))
            elif artifact is Artifact.TOKENS_BY_ACTIVATION:
                expected = TOKEN_LOOKUP
                path.write_text(dumps(expected))
            else:
                expected = WEIGHT_SUMMARY
                path.write_text(dumps(expected))
            mirror.expected[(spec.name, artifact)] = expected
    return mirror


# --- a loopback HTTP mirror -------------------------------------------------------------------------

@dataclass
class HttpMirror:
    url: str
    directory: Path
    requests: list[str] = field(default_factory=list)
    delay_s: float = 0.0
    """Pause between 1 KiB chunks of every response, to keep a download in flight."""


@pytest.fixture
def http_mirror(tmp_path: Path) -> Iterator[HttpMirror]:
    """Serves `directory` on 127.0.0.1 (the only network the tests use), optionally slowly."""
    directory = tmp_path / "served"
    directory.mkdir()
    state = HttpMirror(url="", directory=directory)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            path = directory / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for start in range(0, len(data), 1024):
                self.wfile.write(data[start:start + 1024])
                if state.delay_s:
                    self.wfile.flush()
                    time.sleep(state.delay_s)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
