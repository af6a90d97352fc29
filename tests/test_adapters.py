"""agentaudit.adapters: the helpers every adapter shares, written once."""

from __future__ import annotations

import asyncio

import pytest

import agentaudit as aa
from agentaudit.adapters import error_text, is_cancellation, status_for_exception, usage_from


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


class WorkflowTimeoutError(Exception):
    """A framework's own timeout, matched by name."""


def test_error_text_never_raises() -> None:
    assert error_text(ValueError("boom")) == "ValueError: boom"
    assert error_text(ValueError()) == "ValueError"
    assert error_text(Unprintable()) == "Unprintable: <unprintable Unprintable>"
    assert error_text(ValueError("bad \ud800 text")) == "ValueError: bad \ufffd text"


@pytest.mark.parametrize(
    "exc, status",
    [
        (asyncio.CancelledError(), aa.RunStatus.CANCELLED),
        (KeyboardInterrupt(), aa.RunStatus.CANCELLED),
        (TimeoutError(), aa.RunStatus.TIMEOUT),
        (WorkflowTimeoutError(), aa.RunStatus.TIMEOUT),
        (ValueError(), aa.RunStatus.FAILED),
    ],
)
def test_status_for_exception(exc: BaseException, status: aa.RunStatus) -> None:
    assert status_for_exception(exc) is status
    assert is_cancellation(exc) is (status is aa.RunStatus.CANCELLED)


@pytest.mark.parametrize(
    "usage, expected",
    [
        (  # OpenAI Chat Completions
            {"prompt_tokens": 100, "completion_tokens": 20,
             "prompt_tokens_details": {"cached_tokens": 64},
             "completion_tokens_details": {"reasoning_tokens": 8}},
            aa.Usage(100, 20, 8, 64),
        ),
        (  # OpenAI Responses
            {"input_tokens": 100, "output_tokens": 20, "input_tokens_details": {"cached_tokens": 64},
             "output_tokens_details": {"reasoning_tokens": 8}},
            aa.Usage(100, 20, 8, 64),
        ),
        (  # Anthropic: input_tokens excludes cached input
            {"input_tokens": 30, "output_tokens": 20, "cache_read_input_tokens": 64,
             "cache_creation_input_tokens": 6},
            aa.Usage(100, 20, 0, 64),
        ),
        (  # LangChain usage_metadata
            {"input_tokens": 100, "output_tokens": 20, "input_token_details": {"cache_read": 64},
             "output_token_details": {"reasoning": 8}},
            aa.Usage(100, 20, 8, 64),
        ),
        ({"input_tokens": -5, "output_tokens": "many"}, aa.Usage()),  # nonsense reads as zero
        (None, aa.Usage()),
        (42, aa.Usage()),
    ],
)
def test_usage_from_reads_every_provider_shape(usage: object, expected: aa.Usage) -> None:
    assert usage_from(usage) == expected
