"""Prompt building, budgeting, candidates and failures of the explainers, against a scripted backend."""

from __future__ import annotations

import pytest

from golden import assert_golden
from neuroscribe.errors import BackendError, ConfigError, DataError, ParseError
from neuroscribe.explainer import EXPLAINERS, ExplainerInput, create_explainer
from neuroscribe.explainer.token_activation_pair import truncate_around_peak
from neuroscribe.formatting import sparse_pair_record
from neuroscribe.llm.base import Capability, Choice, Completion, CompletionRequest, Usage
from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.records import ActivationRecord, UnitId, UnitKind
from neuroscribe.results import TokenLookupTableSummaryOfNeuron

UNIT = UnitId(3, 17)
RECORDS = [
    ActivationRecord(tokens=["I", " love", " Paris", " in", " May", "."], activations=[0.0, 0.1, 2.4, 0.0, 0.3, 0.0]),
    ActivationRecord(tokens=["Flights", " to", " Rome", "\n", " \t\n"], activations=[0.0, 0.0, 1.9, -0.2, 0.0]),
]
NO_CHAT = frozenset(Capability) - {Capability.CHAT}


def answering(*texts: str) -> ScriptedBackend:
    def respond(request: CompletionRequest) -> Completion:
        n = request.sampling.n
        choices = tuple(Choice(text=texts[i % len(texts)]) for i in range(n))
        return Completion(choices=choices, usage=Usage(prompt_tokens=100, completion_tokens=5 * n))

    return ScriptedBackend(respond)


def render(request: CompletionRequest) -> str:
    """A request as text, for golden files."""
    if request.prompt is not None:
        return request.prompt
    assert request.messages is not None
    return "\n".join(f"=== {m.role}\n{m.content}" for m in request.messages) + "\n"


async def test_token_activation_pair_chat_prompt_is_pinned() -> None:
    backend = answering("The main thing this neuron does is respond to names of cities.")
    output = await create_explainer("token_activation_pair", backend, {}).explain(
        ExplainerInput(unit=UNIT, records=RECORDS)
    )
    assert output.explanations == ["names of cities"]
    assert output.failures == [] and output.notes == []
    assert output.usage.prompt_tokens == 100
    assert_golden("explainer/token_activation_pair_chat.txt", render(backend.requests[0]))


async def test_token_activation_pair_completion_prompt_is_pinned() -> None:
    backend = answering(" names of European capitals.")
    backend.capabilities = NO_CHAT
    explainer = create_explainer("token_activation_pair", backend, {"omit_zero_activations": True})
    output = await explainer.explain(ExplainerInput(unit=UNIT, records=RECORDS))
    assert output.explanations == ["names of European capitals"]
    request = backend.requests[0]
    assert request.prompt is not None
    assert request.prompt.endswith("Explanation: the main thing this neuron does is respond to")
    assert request.sampling.stop == ("\n",)
    assert_golden("explainer/token_activation_pair_completion_omit_zeros.txt", render(request))


async def test_values_are_normalized_to_the_max_over_shown_excerpts() -> None:
    backend = answering("cities")
    await create_explainer("token_activation_pair", backend, {"n_worked_examples": 0}).explain(
        ExplainerInput(unit=UNIT, records=RECORDS)
    )
    prompt = render(backend.requests[0])
    assert " Paris\t10" in prompt and " Rome\t7" in prompt and " May\t1" in prompt
    # tokens with line breaks and tabs stay on one line each, so the format cannot be broken by a token
    assert "\\n\t0" in prompt and " \\t\\n\t0" in prompt


async def test_candidates_parsed_deduplicated_and_failures_recorded() -> None:
    backend = answering("names of cities", "Names of cities.", "", "city names in travel text")
    explainer = create_explainer("token_activation_pair", backend, {"n_candidates": 4, "temperature": 1.0})
    output = await explainer.explain(ExplainerInput(unit=UNIT, records=RECORDS))
    assert backend.requests[0].sampling.n == 4 and backend.requests[0].sampling.temperature == 1.0
    assert output.explanations == ["names of cities", "Names of cities", "city names in travel text"]
    assert len(output.failures) == 1 and isinstance(output.failures[0], ParseError)
    assert "no explanation" in str(output.failures[0])


async def test_backend_error_becomes_one_failure_per_candidate() -> None:
    def fail(request: CompletionRequest) -> Completion:
        raise BackendError("server said 503", retryable=True, status_code=503)

    explainer = create_explainer("token_activation_pair", ScriptedBackend(fail), {"n_candidates": 2})
    output = await explainer.explain(ExplainerInput(unit=UNIT, records=RECORDS))
    assert output.explanations == []
    assert len(output.failures) == 2
    assert all(isinstance(f, BackendError) and f.status_code == 503 for f in output.failures)


async def test_budget_drops_excerpts_then_examples_then_truncates() -> None:
    long_record = ActivationRecord(tokens=[f" w{i}" for i in range(64)], activations=[float(i % 7) for i in range(64)])
    records = [long_record] * 5
    sizes = []
    for context_length in (100_000, 800, 240):
        backend = answering("words")
        backend.context_length = context_length
        output = await create_explainer("token_activation_pair", backend, {"max_tokens": 20}).explain(
            ExplainerInput(unit=UNIT, records=records)
        )
        assert output.explanations == ["words"]
        request = backend.requests[0]
        assert request.messages is not None
        assert sum(backend.count_tokens(m.content) + 8 for m in request.messages) <= context_length - 20
        sizes.append((len(request.messages), render(request).count("<start>")))
        if context_length == 100_000:
            assert output.notes == []
        if context_length == 800:
            assert output.notes == ["dropped 2 of 5 excerpts to fit 780 prompt tokens"]
        if context_length == 240:
            assert any(note.startswith("truncated the remaining excerpt to ") for note in output.notes)
            assert any("worked examples" in note for note in output.notes)
    # system, 2 worked examples (user + assistant each), the question; 2 + 5 excerpts, then 2 + 3, then 1
    assert sizes == [(6, 7), (6, 5), (2, 1)]


async def test_prompt_that_cannot_fit_is_a_recorded_failure() -> None:
    backend = answering("words")
    backend.context_length = 70
    output = await create_explainer("token_activation_pair", backend, {"max_tokens": 60}).explain(
        ExplainerInput(unit=UNIT, records=RECORDS)
    )
    assert output.explanations == [] and backend.requests == []
    assert len(output.failures) == 1 and isinstance(output.failures[0], DataError)
    assert "does not fit the model's context" in str(output.failures[0])


def test_truncation_keeps_the_peak() -> None:
    record = ActivationRecord(tokens=[str(i) for i in range(20)], activations=[0.0] * 15 + [5.0] + [0.0] * 4)
    window = truncate_around_peak(record, 6)
    assert len(window.tokens) == 6 and "15" in window.tokens and window.activations[window.tokens.index("15")] == 5.0


async def test_token_lookup_prompt_is_pinned() -> None:
    table = TokenLookupTableSummaryOfNeuron(tokens=[" cat", " dog", " the", " hamster"],
                                            average_activations=[2.0, 3.0, -0.5, 1.5])
    backend = answering("This neuron fires on names of pets.")
    output = await create_explainer("token_lookup", backend, {"max_tokens_shown": 3}).explain(
        ExplainerInput(unit=UNIT, lookup_table=table)
    )
    assert output.explanations == ["names of pets"]
    prompt = render(backend.requests[0])
    assert " dog\t10\n cat\t6\n hamster\t5" in prompt and " the\t" not in prompt.split("=== user")[-1]
    assert_golden("explainer/token_lookup_chat.txt", prompt)


async def test_attention_head_prompt_marks_strongest_pairs() -> None:
    record = sparse_pair_record(("A", " cat", " sat", ".", " The", " cat"), {(5, 1): 4.0, (2, 1): 1.0})
    backend = answering("The main thing this attention head does is link a repeated noun to its first mention.")
    output = await create_explainer("attention_head", backend, {"pairs_per_excerpt": 2}).explain(
        ExplainerInput(unit=UnitId(5, 2, UnitKind.ATTENTION_HEAD), token_pair_records=[record])
    )
    assert output.explanations == ["a repeated noun to its first mention"]
    prompt = render(backend.requests[0])
    assert "[5]' cat' -> [1]' cat'\t10" in prompt and "[2]' sat' -> [1]' cat'\t2" in prompt
    assert_golden("explainer/attention_head_chat.txt", prompt)


@pytest.mark.parametrize(
    ("name", "inputs", "message"),
    [
        ("token_activation_pair", ExplainerInput(unit=UNIT), "needs excerpts"),
        ("token_activation_pair",
         ExplainerInput(unit=UNIT, records=[ActivationRecord(tokens=["a"], activations=[-1.0])]), "above 0"),
        ("token_lookup", ExplainerInput(unit=UNIT, records=RECORDS), "look-up table"),
        ("attention_head", ExplainerInput(unit=UNIT, records=RECORDS), "token-pair records"),
    ],
)
async def test_missing_evidence_is_a_data_error(name: str, inputs: ExplainerInput, message: str) -> None:
    with pytest.raises(DataError, match=message):
        await create_explainer(name, answering("x"), {}).explain(inputs)


def test_options_are_validated() -> None:
    backend = answering("x")
    with pytest.raises(ConfigError, match=r"unknown option 'temprature'.*Did you mean 'temperature'"):
        create_explainer("token_activation_pair", backend, {"temprature": 0.5})
    with pytest.raises(ConfigError, match=r"option 'n_candidates' must be int, got '3'"):
        create_explainer("token_activation_pair", backend, {"n_candidates": "3"})
    with pytest.raises(ConfigError, match="n_candidates must be >= 1"):
        create_explainer("token_activation_pair", backend, {"n_candidates": 0})
    with pytest.raises(ConfigError, match="prompt_format"):
        create_explainer("token_activation_pair", backend, {"prompt_format": "xml"})
    with pytest.raises(ConfigError, match="Did you mean 'token_lookup'"):
        create_explainer("token_lookp", backend, {})
    assert {"attention_head", "token_activation_pair", "token_lookup"} <= set(EXPLAINERS.names())  # plugins add more
