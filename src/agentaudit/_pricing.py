"""Cost of a step from its usage: a mapping of model to prices per million tokens, or a
callable. No built-in price list: prices change, and a stale one would lie."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ._model import Usage

__all__ = ["Pricing", "price_step"]

# model -> {"input": $/M, "output": $/M, "cache_read": $/M (optional)}, or a callable.
Pricing = Mapping[str, Mapping[str, float]] | Callable[[str, Usage], float | None]


def _lookup(prices: Mapping[str, Mapping[str, float]], model: str) -> Mapping[str, float] | None:
    if model in prices:
        return prices[model]
    bare = model.split("/", 1)[1] if "/" in model else model
    if bare in prices:
        return prices[bare]
    # Longest key that prefixes the model: "gpt-4o-mini" prices "gpt-4o-mini-2024-07-18".
    best = None
    for key in prices:
        if (model.startswith(key) or bare.startswith(key)) and (best is None or len(key) > len(best)):
            best = key
    return prices[best] if best is not None else None


def price_step(pricing: Pricing, model: str, usage: Usage) -> float | None:
    """USD for one step, or None when the model has no price."""
    if callable(pricing):
        value = pricing(model, usage)
        return None if value is None else float(value)
    entry = _lookup(pricing, model)
    if entry is None:
        return None
    input_price = float(entry.get("input", 0.0))
    cache_price = float(entry.get("cache_read", input_price))
    output_price = float(entry.get("output", 0.0))
    cached = min(usage.cache_read_tokens, usage.input_tokens)
    fresh = usage.input_tokens - cached
    return (fresh * input_price + cached * cache_price + usage.output_tokens * output_price) / 1e6
