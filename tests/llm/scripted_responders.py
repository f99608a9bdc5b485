"""Responders the 'scripted' backend tests name in configs ("scripted_responders:echo")."""

from __future__ import annotations

from neuroscribe.llm.base import Choice, Completion, CompletionRequest

NOT_A_FUNCTION = 42


def echo(request: CompletionRequest) -> Completion:
    """The prompt (or the last message) back, upper-cased."""
    text = request.prompt if request.prompt is not None else request.messages[-1].content  # type: ignore[index]
    return Completion(choices=(Choice(text=text.upper()),))


async def echo_later(request: CompletionRequest) -> Completion:
    return echo(request)
