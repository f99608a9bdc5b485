"""Explainers: show a model what a unit did and have it say, in a phrase, what the unit responds to.

`EXPLAINERS` maps config names to explainer classes; `create_explainer` builds one with options
validated against its options dataclass. A new explainer is one module plus a registry entry here.
"""

from __future__ import annotations

from collections.abc import Mapping

from neuroscribe.explainer.attention_head import AttentionHeadExplainer, AttentionHeadOptions
from neuroscribe.explainer.base import Explainer, ExplainerInput, ExplainerOutput
from neuroscribe.explainer.prompts import ExplainerOptions, PromptedExplainer
from neuroscribe.explainer.token_activation_pair import TokenActivationPairExplainer, TokenActivationPairOptions
from neuroscribe.explainer.token_lookup import TokenLookupExplainer, TokenLookupOptions
from neuroscribe.llm.base import Backend
from neuroscribe.registry import Registry, registered_options

EXPLAINERS: Registry[Explainer] = Registry("explainer")
EXPLAINERS.register("token_activation_pair")(TokenActivationPairExplainer)
EXPLAINERS.register("token_lookup")(TokenLookupExplainer)
EXPLAINERS.register("attention_head")(AttentionHeadExplainer)


def create_explainer(name: str, backend: Backend, options: Mapping[str, object]) -> Explainer:
    """The explainer registered as `name`, talking to `backend`; unknown or ill-typed options fail early."""
    return EXPLAINERS.get(name)(backend, registered_options(EXPLAINERS, name, options))


__all__ = [
    "EXPLAINERS",
    "AttentionHeadExplainer",
    "AttentionHeadOptions",
    "Explainer",
    "ExplainerInput",
    "ExplainerOptions",
    "ExplainerOutput",
    "PromptedExplainer",
    "TokenActivationPairExplainer",
    "TokenActivationPairOptions",
    "TokenLookupExplainer",
    "TokenLookupOptions",
    "create_explainer",
]
