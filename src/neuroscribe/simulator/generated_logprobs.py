"""The paper's simulation from generated-token log-probabilities: one request per excerpt, no prompt logprobs.

For chat models and servers that return top log-probabilities only for the tokens they generate
(OpenAI chat, vLLM, the llama.cpp server). The excerpt is shown as `token<TAB>unknown` lines (the
all-at-once layout); the model copies it, writing a value 0..10 in place of each `unknown`, and the
top log-probabilities at each value's first digit give the distribution over "0".."10"
(renormalized over those values; mass on anything else is dropped).

Digit-splitting tokenizers (SmolLM2, Llama) write "10" as "1" then "0". Where the model generated
"1", the next position's alternatives are read too: P(10) = P("1") * P("0" | "1") and
P(1) = P("1") * P(no digit next | "1"), where "no digit" is everything the top alternatives do not
spend on digits (digits outside the top-k are assumed absent); "1" followed by another digit (11..19)
is dropped. That split is exact for the continuation the model actually generated. An alternative
"1" the model did *not* generate has no generated continuation to read, so it counts as 1: 10 is
under-read only where the model put mass on "1" but wrote another value (one-at-a-time reads every
"1" as 1). Tokenizers with a "10" token get 10 directly.

The reply is re-aligned to the excerpt by token text (`align`): merged or split tokens are matched by
their characters, rewritten tokens are matched in order, and missing tokens get 0, all within
`alignment_tolerance`; beyond it, or a reply with no `token<TAB>value` lines, is a `ParseError` with
the raw text. Several excerpts can share one request (`excerpts_per_request`): concurrent `simulate`
calls with the same explanation are grouped, and the reply is aligned against all of them at once,
so no header or marker has to survive for the split to work.

Small models cannot copy an excerpt (SmolLM2-135M repeats one token), so with `constrained = true` the
reply is JSON, `[[token, value], ...]` per excerpt, held by a JSON schema whose every token is a
constant: the backend's grammar writes the tokens, the model chooses only the values, and the values'
log-probabilities are read exactly as in the text layout (the mask changes what is sampled, not the
log-probabilities returned, on backends that report them before constraints: in process, llama.cpp).
"""

from __future__ import annotations

import asyncio
import bisect
import difflib
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from neuroscribe import formatting
from neuroscribe.errors import CapabilityError, DataError, NeuroscribeError, ParseError
from neuroscribe.llm.base import (
    Backend,
    CallEstimate,
    Capability,
    Choice,
    CompletionRequest,
    Message,
    SamplingParams,
    TokenLogprob,
    prompt_tokens,
    resolve_format,
)
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.simulator.all_at_once import CANDIDATE_VALUES
from neuroscribe.simulator.json_simulator import PAIR
from neuroscribe.simulator.prompts import (
    INSTRUCTIONS,
    PREAMBLE_TOKENS,
    PromptedSimulator,
    TopLogprobsOptions,
    explanation_line,
)

log = logging.getLogger(__name__)

REPLY_SLACK_TOKENS = 16
"""Generation budget per excerpt on top of `max_tokens_per_token` per token (markers, a stray line)."""

ASK = (
    "To predict an excerpt, copy it line by line, each token exactly as shown, and replace each "
    f"\"{formatting.UNKNOWN}\" with the predicted activation, a whole number from 0 to 10. Keep the "
    f"{formatting.START} and {formatting.END} lines; when there are several excerpts, answer each in order."
)

ASK_JSON = (
    "To predict an excerpt, answer with a JSON list holding, for each of its tokens in order, a pair: the "
    "token exactly as shown and the predicted activation, a whole number from 0 to 10. When there are several "
    "excerpts, answer with a list of such lists, one per excerpt, in order."
)

_VALUE = re.compile(r"[ \t]*(\d+)[ \t\r]*")
_DIGITS = re.compile(r"\d+")
_N_VALUES = len(formatting.VALUE_CANDIDATES)


@dataclass(frozen=True, kw_only=True)
class GeneratedLogprobsOptions(TopLogprobsOptions):
    excerpts_per_request: int = 1
    """Excerpts answered in one request; concurrent `simulate` calls with the same explanation are grouped.
    More per request shares the instructions and worked examples, at the cost of longer replies."""
    max_tokens_per_token: int = 10
    """Generation budget per excerpt token, in tokens (one `token<TAB>value` line is about 3-7)."""
    constrained: bool = False
    """Reply as JSON `[[token, value], ...]` held by a JSON schema to copy every token exactly, so the model
    writes only the values; needs a backend with JSON-schema output (in process with xgrammar, llama.cpp,
    vLLM). For models too small to copy an excerpt; stronger models can answer in the text layout."""
    alignment_tolerance: float = 0.2
    """Largest share of an excerpt's tokens that may be missing from the reply, answered under other text,
    or outnumbered by extra lines, together; beyond it the reply is a ParseError."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.excerpts_per_request <= 64:
            raise ValueError(f"excerpts_per_request must be in 1..64, got {self.excerpts_per_request}")
        if self.max_tokens_per_token < 3:
            raise ValueError(f"max_tokens_per_token must be >= 3, got {self.max_tokens_per_token}")
        if not 0.0 <= self.alignment_tolerance < 1.0:
            raise ValueError(f"alignment_tolerance must be in [0, 1), got {self.alignment_tolerance}")


# -- prompt ------------------------------------------------------------------------------------------


def question(explanation: str, excerpts: Sequence[Sequence[str]]) -> str:
    """The explanation, then each excerpt between <start>/<end> as `token<TAB>unknown` lines."""
    blocks = ["\n".join([formatting.START, *formatting.activation_lines(tokens, [formatting.UNKNOWN] * len(tokens)),
                         formatting.END]) for tokens in excerpts]
    return "\n".join([explanation_line(explanation), "\n\n".join(blocks)])


def answer(tokens: Sequence[str], values: Sequence[int], constrained: bool) -> str:
    if constrained:
        return json.dumps([[token, value] for token, value in zip(tokens, values, strict=True)], ensure_ascii=False)
    return "\n".join([formatting.START, *formatting.activation_lines(tokens, values), formatting.END])


def answer_schema(excerpts: Sequence[Sequence[str]]) -> str:
    """Every token a constant, every value one of 0..10: one excerpt's list of pairs, or a list of them."""
    def exactly(items: list[dict[str, Any]]) -> dict[str, Any]:
        # the length bounds, not `"items": false`, close the list: llama.cpp's chat parser rejects a boolean schema
        return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}

    value = {"enum": list(range(len(formatting.VALUE_CANDIDATES)))}
    lists = [exactly([exactly([{"const": token}, value]) for token in tokens]) for tokens in excerpts]
    return json.dumps(lists[0] if len(lists) == 1 else exactly(lists), ensure_ascii=False)


def worked_examples(n: int, constrained: bool) -> list[tuple[str, str]]:
    """(question, answer) for the first n shared worked examples: the answer format shown, not just described."""
    return [(question(ex.explanation, [ex.tokens]), answer(ex.tokens, ex.values, constrained))
            for ex in formatting.WORKED_EXAMPLES[:n]]


def build_request(explanation: str, excerpts: Sequence[Sequence[str]], n_worked_examples: int,
                  fmt: Literal["chat", "completion"], options: GeneratedLogprobsOptions) -> CompletionRequest:
    max_tokens = sum(REPLY_SLACK_TOKENS + options.max_tokens_per_token * len(tokens) for tokens in excerpts)
    constrained = options.constrained
    # A constrained reply ends with its schema, but llama.cpp's schema grammar allows any run of whitespace
    # between items, where a small model can idle until max_tokens: a blank run ends it. One excerpt in text
    # ends at its <end> line (an excerpt token "<end>" is followed by a tab, not a newline); several end where
    # a completion model would start a new example.
    stop = (("\n\n\n",) if constrained else (f"\n{formatting.END}\n",) if len(excerpts) == 1
            else ("Explanation:",))
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=stop)
    schema = answer_schema(excerpts) if constrained else None
    ask = ASK_JSON if constrained else ASK
    examples = worked_examples(n_worked_examples, constrained)
    if fmt == "chat":
        messages = [Message(role="system", content=f"{INSTRUCTIONS} {ask}")]
        for example_question, example_answer in examples:
            messages += [Message(role="user", content=example_question),
                         Message(role="assistant", content=example_answer)]
        messages.append(Message(role="user", content=question(explanation, excerpts)))
        return CompletionRequest(messages=tuple(messages), sampling=sampling, top_logprobs=options.top_logprobs,
                                 json_schema=schema)
    shown = "".join(f"{q}\nAnswer:\n{a}\n\n" for q, a in examples)
    opening = "" if constrained else f"{formatting.START}\n"
    prompt = f"{INSTRUCTIONS} {ask}\n\n{shown}{question(explanation, excerpts)}\nAnswer:\n{opening}"
    return CompletionRequest(prompt=prompt, sampling=sampling, top_logprobs=options.top_logprobs, json_schema=schema)


# -- reading the reply -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyLine:
    """One `token<TAB>value` line of a reply: the token as written and the distribution over 0..10 read there."""

    token: str
    probabilities: tuple[float, ...]


def _alternatives(entry: TokenLogprob) -> list[tuple[str, float]]:
    """The top alternatives, with the generated token added when the backend left it out (sampling)."""
    alternatives = list(entry.top)
    if all(token != entry.token for token, _ in alternatives):
        alternatives.append((entry.token, entry.logprob))
    return alternatives


def _ten_and_digit_mass(entry: TokenLogprob) -> tuple[float, float]:
    """After a generated "1": the probability that "0" follows (-> 10) and that any digit follows."""
    ten = digit = 0.0
    for token, logprob in _alternatives(entry):
        digits = _DIGITS.match(token)
        if digits:
            digit += math.exp(logprob)
            ten += math.exp(logprob) if digits.group() == "0" else 0.0
    return ten, min(digit, 1.0)


def value_distribution(logprobs: Sequence[TokenLogprob], index: int, within: int) -> list[float] | None:
    """Probabilities of 0..10 for a value whose first digit is character `within` of generated token `index`.

    Alternatives are read after the generated token's own prefix (e.g. a tab merged into "\\t5"), so
    "\\t0".."\\t9" count as 0..9. None when no alternative is a value (the caller falls back).
    """
    entry = logprobs[index]
    prefix = entry.token[:within]
    mass = [0.0] * _N_VALUES
    for token, logprob in _alternatives(entry):
        if not token.startswith(prefix):
            continue
        rest = token[len(prefix):].lstrip(" ")
        digits = _DIGITS.match(rest)
        if digits is None or digits.group() not in formatting.VALUE_CANDIDATES:
            continue
        p = math.exp(logprob)
        if digits.group() == "1" and rest == "1" and token == entry.token and index + 1 < len(logprobs):
            ten, digit = _ten_and_digit_mass(logprobs[index + 1])
            mass[10] += p * ten
            mass[1] += p * (1.0 - digit)
        else:
            mass[int(digits.group())] += p
    total = sum(mass)
    return [m / total for m in mass] if total > 0 else None


def _lines(text: str) -> Iterator[tuple[str, int, str]]:
    """(token as shown, offset of the value's first digit, value) per `token<TAB>value` line; lines without
    a tab and a whole number after it (markers, prose, "unknown") are skipped."""
    offset = 0
    for line in text.split("\n"):
        tab = line.rfind("\t")
        match = _VALUE.fullmatch(line, tab + 1) if tab >= 0 else None
        if match is not None:
            yield line[:tab], offset + match.start(1), match.group(1)
        offset += len(line) + 1


def _pairs(text: str) -> Iterator[tuple[str, int, str]]:
    """The same per `[token, value]` pair of a JSON reply, the token shown as in the text layout."""
    for match in PAIR.finditer(text):
        try:
            token = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        yield formatting.render_token(token), match.start(2), match.group(2)


def read_lines(choice: Choice, constrained: bool = False) -> tuple[list[ReplyLine], list[str]]:
    """Every `token<TAB>value` line (or JSON `[token, value]` pair) of the generated text with its value
    distribution, and notes. The text is the concatenation of the generated tokens, so positions map to
    tokens exactly; values outside 0..10 are skipped."""
    if not choice.logprobs:
        raise ParseError("the backend returned no logprobs for the generated reply", raw_text=choice.text)
    logprobs = choice.logprobs
    pieces = [entry.token for entry in logprobs]
    starts = [0]
    for piece in pieces:
        starts.append(starts[-1] + len(piece))
    text = "".join(pieces)
    notes = []
    if text != choice.text:
        notes.append("the generated tokens do not spell the reply text exactly; read the tokens")
    lines: list[ReplyLine] = []
    for token, digit_at, written in (_pairs if constrained else _lines)(text):
        if written not in formatting.VALUE_CANDIDATES:
            continue
        index = bisect.bisect_right(starts, digit_at) - 1
        row = value_distribution(logprobs, index, digit_at - starts[index])
        if row is None:
            value = int(written)
            notes.append(f"no value 0-10 among the top alternatives at line {len(lines) + 1}; used the "
                         f"generated value {value}")
            row = [1.0 if v == value else 0.0 for v in range(_N_VALUES)]
        lines.append(ReplyLine(token=token, probabilities=tuple(row)))
    if not lines:
        layout = "[token, value] pairs" if constrained else "token<TAB>value lines"
        raise ParseError(f"the reply has no {layout}", raw_text=choice.text)
    return lines, notes


def _key(rendered: str) -> str:
    """Models drop or add a copied token's surrounding spaces; that is not a mismatch."""
    return rendered.strip()


def _squeezed(text: str) -> str:
    return "".join(text.split())


def _spans(keys: Sequence[str]) -> list[tuple[int, int]]:
    spans, at = [], 0
    for key in keys:
        length = len(_squeezed(key))
        spans.append((at, at + length))
        at += length
    return spans


def _by_characters(wanted: Sequence[str], answered: Sequence[str]) -> list[list[int]]:
    """For merged or split tokens (same characters, other boundaries): the answered lines covering each wanted token."""
    answered_spans = _spans(answered)
    covering = []
    for start, end in _spans(wanted):
        lines = [j for j, (a, b) in enumerate(answered_spans) if a < end and start < b]
        if not lines:  # a token with no characters of its own (blank) takes the line at its position
            lines = [next((j for j, (a, b) in enumerate(answered_spans) if b > start), len(answered) - 1)]
        covering.append(lines)
    return covering


@dataclass(frozen=True)
class Alignment:
    """Per excerpt token: the reply lines whose distributions it takes (empty: missing); per excerpt, misfits."""

    lines: list[list[int]]
    misfits: list[int]


def align(excerpts: Sequence[Sequence[str]], answered: Sequence[str]) -> Alignment:
    """Match the excerpts' tokens (concatenated, in order) to the reply's token column.

    Matching text (ignoring surrounding spaces) is aligned as is; a run whose characters agree but whose
    boundaries differ (merged or split tokens) is aligned by characters; other runs are paired in order
    (rewritten tokens, counted as misfits), and what is left is missing (misfit) or extra (a misfit of
    the excerpt before it, unless it comes before or after everything matched).
    """
    wanted = [_key(formatting.render_token(t)) for tokens in excerpts for t in tokens]
    owner = [e for e, tokens in enumerate(excerpts) for _ in tokens]
    keys = [_key(t) for t in answered]
    lines: list[list[int]] = [[] for _ in wanted]
    misfits = [0] * len(excerpts)
    opcodes = difflib.SequenceMatcher(a=wanted, b=keys, autojunk=False).get_opcodes()
    for n, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            for offset in range(i2 - i1):
                lines[i1 + offset] = [j1 + offset]
        elif tag == "replace" and _squeezed("".join(wanted[i1:i2])) == _squeezed("".join(keys[j1:j2])):
            for offset, covering in enumerate(_by_characters(wanted[i1:i2], keys[j1:j2])):
                lines[i1 + offset] = [j1 + j for j in covering]
        else:
            paired = min(i2 - i1, j2 - j1)
            for offset in range(paired):
                lines[i1 + offset] = [j1 + offset]
            for i in range(i1, i2):
                misfits[owner[i]] += 1
            extra = (j2 - j1) - paired
            if extra and 0 < n < len(opcodes) - 1:  # lines before or after everything matched are not counted
                misfits[owner[i1] if i2 > i1 else owner[i1 - 1]] += extra
    return Alignment(lines=lines, misfits=misfits)


def read_reply(choice: Choice, excerpts: Sequence[Sequence[str]], alignment_tolerance: float,
               constrained: bool = False) -> tuple[list[list[list[float]] | ParseError], list[str]]:
    """Per excerpt, the distribution over 0..10 at each token, or the ParseError that excerpt's answer is."""
    reply, notes = read_lines(choice, constrained)
    alignment = align(excerpts, [line.token for line in reply])
    results: list[list[list[float]] | ParseError] = []
    at = 0
    for e, tokens in enumerate(excerpts):
        rows: list[list[float]] = []
        missing = 0
        for covering in alignment.lines[at:at + len(tokens)]:
            if not covering:
                missing += 1
                rows.append([1.0] + [0.0] * (_N_VALUES - 1))
                continue
            picked = [reply[j].probabilities for j in covering]
            rows.append([sum(p[v] for p in picked) / len(picked) for v in range(_N_VALUES)])
        at += len(tokens)
        allowed = math.floor(alignment_tolerance * len(tokens) + 1e-9)
        where = f"excerpt {e + 1} of {len(excerpts)}: " if len(excerpts) > 1 else ""
        if alignment.misfits[e] > allowed:
            results.append(ParseError(
                f"{where}the reply does not line up with the excerpt's {len(tokens)} tokens: "
                f"{alignment.misfits[e]} missing, rewritten or extra (at most {allowed} allowed by "
                f"alignment_tolerance={alignment_tolerance})",
                raw_text=choice.text,
            ))
            continue
        if alignment.misfits[e]:
            notes.append(f"{where}re-aligned by token text: {alignment.misfits[e]} of {len(tokens)} tokens "
                         f"misfit, {missing} unanswered set to 0")
        results.append(rows)
    return results, notes


# -- the simulator -----------------------------------------------------------------------------------


def _simulation(tokens: Sequence[str], rows: list[list[float]]) -> SequenceSimulation:
    return SequenceSimulation(
        tokens=list(tokens),
        expected_activations=[sum(v * p for v, p in zip(CANDIDATE_VALUES, row, strict=True)) for row in rows],
        activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS,
        distribution_values=[list(CANDIDATE_VALUES) for _ in tokens],
        distribution_probabilities=rows,
    )


@dataclass
class _Pending:
    tokens: tuple[str, ...]
    future: asyncio.Future[SequenceSimulation]


class GeneratedLogprobsSimulator(PromptedSimulator[GeneratedLogprobsOptions]):
    """Needs generated-token logprobs (HF, llama.cpp server, OpenAI-compatible chat); one request per excerpt."""

    options_type = GeneratedLogprobsOptions

    @classmethod
    def estimate(cls, options: Any, excerpt_tokens: int) -> CallEstimate:
        """One request per excerpt (an upper bound with `excerpts_per_request` > 1, which also shares the
        instructions and worked examples); the reply repeats every token with its value."""
        shared = PREAMBLE_TOKENS // max(1, getattr(options, "excerpts_per_request", 1))
        return CallEstimate(calls=1, prompt_tokens=excerpt_tokens * 3 + shared,
                            completion_tokens=excerpt_tokens * 5 + 4)

    def __init__(self, backend: Backend, options: GeneratedLogprobsOptions) -> None:
        if Capability.GENERATED_LOGPROBS not in backend.capabilities:
            raise CapabilityError(
                f"the generated-logprobs simulator needs logprobs of generated tokens, which backend "
                f"{backend.name!r} lacks; use the 'json' simulator with it"
            )
        if options.constrained and Capability.JSON_SCHEMA not in backend.capabilities:
            raise CapabilityError(
                f"constrained = true needs a backend that holds output to a JSON schema, which {backend.name!r} "
                "cannot; install neuroscribe[schema] for in-process models, or use llama.cpp or vLLM"
            )
        super().__init__(backend, options)
        self.format = resolve_format(options.prompt_format, backend)
        self._pending: dict[tuple[int, str], list[_Pending]] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    def fitted_requests(self, explanation: str,
                        excerpts: Sequence[Sequence[str]]) -> list[tuple[list[Sequence[str]], CompletionRequest]]:
        """Requests covering `excerpts` in order, each fitting the context with its reply budget: a group
        too long is split first, then worked examples are dropped (logged); DataError if one excerpt with
        none does not fit."""
        wanted = self.options.n_worked_examples
        for n_examples in range(wanted, -1, -1):
            request = build_request(explanation, excerpts, n_examples, self.format, self.options)
            budget = self.backend.context_length - request.sampling.max_tokens
            if prompt_tokens(self.backend, request) <= budget:
                if n_examples < wanted:
                    log.info("generated_logprobs simulator: dropped %d of %d worked examples to fit %d prompt "
                             "tokens", wanted - n_examples, wanted, budget)
                return [(list(excerpts), request)]
            if len(excerpts) > 1:
                half = len(excerpts) // 2
                log.info("generated_logprobs simulator: split a request of %d excerpts to fit the context",
                         len(excerpts))
                return self.fitted_requests(explanation, excerpts[:half]) + self.fitted_requests(
                    explanation, excerpts[half:])
        raise DataError(
            f"an excerpt of {len(excerpts[0])} tokens does not fit the model's context ({self.backend.context_length} "
            f"tokens, {request.sampling.max_tokens} of them kept for the reply) even with no worked examples"
        )

    async def _ask(self, group: list[Sequence[str]],
                   request: CompletionRequest) -> list[SequenceSimulation | NeuroscribeError]:
        completion = await self.backend.complete(request)
        if not completion.choices:
            return [ParseError("the backend returned no answer", raw_text="") for _ in group]
        try:
            results, notes = read_reply(completion.choices[0], group, self.options.alignment_tolerance,
                                        self.options.constrained)
        except ParseError as error:
            return [error for _ in group]
        for note in notes:
            log.info("generated_logprobs simulator: %s", note)
        return [r if isinstance(r, ParseError) else _simulation(tokens, r)
                for tokens, r in zip(group, results, strict=True)]

    async def simulate_excerpts(self, explanation: str,
                                excerpts: Sequence[Sequence[str]]) -> list[SequenceSimulation | NeuroscribeError]:
        """Every excerpt's simulation or the error its answer is, `excerpts_per_request` to a request."""
        size = self.options.excerpts_per_request
        groups = [excerpts[i:i + size] for i in range(0, len(excerpts), size)]
        planned = [p for group in groups for p in self.fitted_requests(explanation, group)]
        answers = await asyncio.gather(*(self._ask(group, request) for group, request in planned))
        return [result for results in answers for result in results]

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        if not tokens:
            return SequenceSimulation(tokens=[], expected_activations=[],
                                      activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS)
        if self.options.excerpts_per_request == 1:
            result = (await self.simulate_excerpts(explanation, [tokens]))[0]
            if isinstance(result, NeuroscribeError):
                raise result
            return result
        loop = asyncio.get_running_loop()
        key = (id(loop), explanation)
        pending = _Pending(tuple(tokens), loop.create_future())
        queue = self._pending.setdefault(key, [])
        queue.append(pending)
        if len(queue) == 1:  # the first caller flushes once the others started together have joined
            task = loop.create_task(self._flush(key, explanation))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        return await pending.future

    async def _flush(self, key: tuple[int, str], explanation: str) -> None:
        await asyncio.sleep(0)
        waiting = self._pending.pop(key, [])
        try:
            results: list[SequenceSimulation | NeuroscribeError] | BaseException = await self.simulate_excerpts(
                explanation, [p.tokens for p in waiting])
        except BaseException as error:  # handed to every waiting caller (cancellation cancels them), not swallowed
            results = error
        for i, pending in enumerate(waiting):
            outcome = results if isinstance(results, BaseException) else results[i]
            if pending.future.done():
                continue
            if isinstance(outcome, asyncio.CancelledError):
                pending.future.cancel()
            elif isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        if isinstance(results, asyncio.CancelledError):
            raise results
