"""aa.record_step: reading OpenAI and Anthropic responses (SDK objects and their plain
dicts) into steps, numbering steps per run, and never raising on a shape it cannot read."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response as OpenAIResponse

import agentaudit as aa
from agentaudit._responses import ResponseShape, describe_shape, to_response

# -- payloads, in the exact shapes the APIs return ------------------------------------


def chat_completion_json(
    *,
    content: str | None = "Let me look that up.",
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "tool_calls",
    model: str = "gpt-4o-mini-2024-07-18",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage
        if usage is not None
        else {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 8, "audio_tokens": 0},
        },
    }


def function_call_json(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def openai_response_json(
    *, output: list[dict[str, Any]], status: str = "completed", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_700_000_000.0,
        "model": "gpt-4.1-mini-2025-04-14",
        "status": status,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage
        if usage is not None
        else {
            "input_tokens": 300,
            "input_tokens_details": {"cached_tokens": 256, "cache_write_tokens": 0},
            "output_tokens": 50,
            "output_tokens_details": {"reasoning_tokens": 32},
            "total_tokens": 350,
        },
    }


def output_message_json(text: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def anthropic_message_json(
    *, content: list[dict[str, Any]], stop_reason: str = "tool_use", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage
        if usage is not None
        else {
            "input_tokens": 40,
            "output_tokens": 25,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 10,
        },
    }


# -- OpenAI Chat Completions -------------------------------------------------------------


@pytest.mark.parametrize("as_sdk_object", [True, False], ids=["sdk", "dict"])
def test_chat_completion_with_tool_calls_reads_every_field(as_sdk_object: bool) -> None:
    payload = chat_completion_json(
        tool_calls=[
            function_call_json("call_1", "get_weather", '{"city": "Paris"}'),
            function_call_json("call_2", "add", '{"b": 3, "a": 2}'),
        ]
    )
    obj = ChatCompletion.model_validate(payload) if as_sdk_object else payload

    response, problems = to_response(obj)

    assert problems == ()
    assert response == aa.Response(
        text="Let me look that up.",
        model="openai/gpt-4o-mini-2024-07-18",
        finish_reason="tool_calls",
        usage=aa.Usage(input_tokens=100, output_tokens=20, reasoning_tokens=8, cache_read_tokens=64),
        tool_calls=(
            aa.ToolCall("get_weather", '{"city": "Paris"}', "call_1"),
            aa.ToolCall("add", {"a": 2, "b": 3}, "call_2"),
        ),
    )


def test_chat_completion_final_answer_without_usage_details() -> None:
    payload = chat_completion_json(
        content="It is sunny.",
        finish_reason="stop",
        usage={"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    )
    response, problems = to_response(ChatCompletion.model_validate(payload))
    assert problems == ()
    assert response.text == "It is sunny."
    assert response.finish_reason == "stop"
    assert response.tool_calls == ()
    assert response.usage == aa.Usage(input_tokens=12, output_tokens=4)


def test_chat_completion_without_usage_is_read_with_zero_tokens() -> None:
    # A stream without stream_options={"include_usage": True} has no usage at all.
    payload = chat_completion_json(content="hi", finish_reason="stop")
    payload["usage"] = None
    response, problems = to_response(payload)
    assert problems == ()
    assert response.usage == aa.Usage()


def test_chat_completion_refusal_is_the_text_when_there_is_no_content() -> None:
    payload = chat_completion_json(content=None, finish_reason="stop")
    payload["choices"][0]["message"]["refusal"] = "I can't help with that."
    response, _ = to_response(ChatCompletion.model_validate(payload))
    assert response.text == "I can't help with that."


def test_chat_completion_custom_and_legacy_function_calls() -> None:
    payload = chat_completion_json(
        content=None,
        tool_calls=[{"id": "call_c", "type": "custom", "custom": {"name": "shell", "input": "ls -la"}}],
    )
    payload["choices"][0]["message"]["function_call"] = {"name": "lookup", "arguments": '{"k": 1}'}
    response, problems = to_response(ChatCompletion.model_validate(payload))
    assert problems == ()
    assert [(c.name, c.args, c.id) for c in response.tool_calls] == [
        ("shell", "ls -la", "call_c"),
        ("lookup", {"k": 1}, ""),
    ]


def test_malformed_tool_arguments_from_the_model_are_kept_verbatim() -> None:
    payload = chat_completion_json(tool_calls=[function_call_json("call_1", "search", '{"q": "x"')])
    response, problems = to_response(ChatCompletion.model_validate(payload))
    assert problems == ()
    assert response.tool_calls[0].args == '{"q": "x"'


def test_model_already_qualified_by_a_router_keeps_its_provider() -> None:
    payload = chat_completion_json(model="anthropic/claude-3.5-sonnet", finish_reason="stop")
    response, _ = to_response(payload)
    assert response.model == "anthropic/claude-3.5-sonnet"


def test_a_stream_chunk_is_read_partially_and_reported() -> None:
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}],
        }
    )
    response, problems = to_response(chunk)
    assert describe_shape(chunk) == ResponseShape.CHAT_COMPLETION_CHUNK
    assert response.model == "openai/gpt-4o-mini"
    assert response.text == "Hel"
    assert len(problems) == 1 and "get_final_completion" in problems[0]


# -- OpenAI Responses --------------------------------------------------------------------


@pytest.mark.parametrize("as_sdk_object", [True, False], ids=["sdk", "dict"])
def test_openai_response_with_function_calls_reads_every_field(as_sdk_object: bool) -> None:
    payload = openai_response_json(
        output=[
            {"id": "rs_1", "type": "reasoning", "summary": []},
            output_message_json("Checking two things."),
            {
                "id": "fc_1",
                "type": "function_call",
                "call_id": "call_a",
                "name": "get_weather",
                "arguments": '{"city":"Rome"}',
                "status": "completed",
            },
            {
                "id": "ctc_1",
                "type": "custom_tool_call",
                "call_id": "call_b",
                "name": "shell",
                "input": "pwd",
            },
        ]
    )
    obj = OpenAIResponse.model_validate(payload) if as_sdk_object else payload

    response, problems = to_response(obj)

    assert problems == ()
    assert response == aa.Response(
        text="Checking two things.",
        model="openai/gpt-4.1-mini-2025-04-14",
        finish_reason="completed",
        usage=aa.Usage(input_tokens=300, output_tokens=50, reasoning_tokens=32, cache_read_tokens=256),
        tool_calls=(
            aa.ToolCall("get_weather", {"city": "Rome"}, "call_a"),
            aa.ToolCall.lenient("shell", "pwd", "call_b"),
        ),
    )


def test_incomplete_openai_response_names_why_it_stopped() -> None:
    payload = openai_response_json(output=[output_message_json("The answer is")], status="incomplete")
    payload["incomplete_details"] = {"reason": "max_output_tokens"}
    response, problems = to_response(OpenAIResponse.model_validate(payload))
    assert problems == ()
    assert response.finish_reason == "max_output_tokens"
    assert response.text == "The answer is"


def test_openai_response_refusal_and_several_messages() -> None:
    refusal = {
        "id": "msg_2",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "refusal", "refusal": "No."}],
    }
    payload = openai_response_json(output=[output_message_json("First."), refusal])
    response, _ = to_response(OpenAIResponse.model_validate(payload))
    assert response.text == "First.\nNo."


# -- Anthropic Messages ----------------------------------------------------------------


@pytest.mark.parametrize("as_sdk_object", [True, False], ids=["sdk", "dict"])
def test_anthropic_message_with_tool_use_reads_every_field(as_sdk_object: bool) -> None:
    payload = anthropic_message_json(
        content=[
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
            {"type": "text", "text": "I'll check "},
            {"type": "text", "text": "the weather."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        usage={
            "input_tokens": 40,
            "output_tokens": 25,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 10,
            "output_tokens_details": {"thinking_tokens": 12},
        },
    )
    obj = Message.model_validate(payload) if as_sdk_object else payload

    response, problems = to_response(obj)

    assert problems == ()
    assert response == aa.Response(
        text="I'll check the weather.",
        model="anthropic/claude-sonnet-4-5-20250929",
        finish_reason="tool_use",
        # input is the whole prompt: uncached + cache read + cache write
        usage=aa.Usage(input_tokens=1050, output_tokens=25, reasoning_tokens=12, cache_read_tokens=1000),
        tool_calls=(aa.ToolCall("get_weather", {"city": "Oslo"}, "toolu_1"),),
    )


def test_anthropic_usage_without_cache_fields() -> None:
    payload = anthropic_message_json(
        content=[{"type": "text", "text": "Done."}],
        stop_reason="end_turn",
        usage={"input_tokens": 7, "output_tokens": 3},
    )
    response, problems = to_response(Message.model_validate(payload))
    assert problems == ()
    assert response.usage == aa.Usage(input_tokens=7, output_tokens=3)
    assert response.finish_reason == "end_turn"


# -- shapes it cannot read ------------------------------------------------------------------


def test_an_agentaudit_response_passes_through_unchanged() -> None:
    given = aa.Response(text="x", model="local/llama", finish_reason="stop")
    assert to_response(given) == (given, ())


@pytest.mark.parametrize("junk", [None, 42, "a string", object(), {"no": "idea"}, [1, 2]])
def test_unknown_shapes_read_nothing_and_report_a_problem(junk: Any) -> None:
    response, problems = to_response(junk)
    assert isinstance(response, aa.Response)
    assert len(problems) == 1
    assert "unrecognized response shape" in problems[0]


def test_unknown_shape_keeps_the_fields_named_alike() -> None:
    class LocalResult:
        def __init__(self) -> None:
            self.model = "ollama/llama3"
            self.text = "hello"
            self.finish_reason = "stop"
            self.usage = {"prompt_tokens": 5, "completion_tokens": 2}

    response, problems = to_response(LocalResult())
    assert len(problems) == 1
    assert response == aa.Response(
        text="hello", model="ollama/llama3", finish_reason="stop", usage=aa.Usage(5, 2)
    )


def test_bad_values_in_a_known_shape_are_reported_and_the_rest_is_kept() -> None:
    payload = chat_completion_json(
        tool_calls=[{"id": "call_1", "type": "function", "function": {"name": "", "arguments": "{}"}}],
        usage={"prompt_tokens": "lots", "completion_tokens": -3, "total_tokens": 0},
    )
    response, problems = to_response(payload)
    assert response.model == "openai/gpt-4o-mini-2024-07-18"
    assert response.text == "Let me look that up."
    assert response.usage == aa.Usage()
    assert response.tool_calls == (aa.ToolCall("<unnamed>", "{}", "call_1"),)
    assert len(problems) == 3
    assert any("prompt_tokens" in p for p in problems)
    assert any("negative" in p for p in problems)
    assert any("no tool name" in p for p in problems)


def test_a_shape_whose_fields_raise_still_gives_a_response() -> None:
    class Exploding:
        object = "chat.completion"
        model = "gpt-4o"

        @property
        def choices(self) -> list[Any]:
            raise RuntimeError("half-built")

    response, problems = to_response(Exploding())
    assert response.model == "openai/gpt-4o"
    assert problems == ("chat completion has no choices",)


def test_a_choice_list_that_raises_is_reported_not_raised() -> None:
    class BadList(list):
        def __getitem__(self, index: Any) -> Any:
            raise RuntimeError("boom")

    payload = chat_completion_json()
    payload["choices"] = BadList([1])
    response, problems = to_response(payload)
    assert response.model == "gpt-4o-mini-2024-07-18"  # the salvage path keeps the raw name
    assert len(problems) == 1 and "RuntimeError: boom" in problems[0]


def test_reading_responses_imports_no_sdk() -> None:
    code = (
        "import sys, json, agentaudit\n"
        "from agentaudit._responses import to_response\n"
        f"to_response(json.loads({json.dumps(json.dumps(chat_completion_json()))}))\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('openai', 'anthropic', 'httpx', 'httpx2', 'pydantic'))\n"
        "print(json.dumps(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []


# -- record_step: steps in the current run ------------------------------------------------


@pytest.fixture
def store() -> aa.MemoryStore:
    return aa.MemoryStore()


@pytest.fixture
def auditor(store: aa.MemoryStore) -> aa.Auditor:
    return aa.Auditor(store)


def steps(store: aa.Store, run_id: str) -> list[dict[str, Any]]:
    return [e.payload for e in store.get_logs(run_id, event_types=["step"])]


def test_record_step_numbers_steps_per_run_and_records_the_response(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    first = ChatCompletion.model_validate(
        chat_completion_json(tool_calls=[function_call_json("call_1", "search", '{"q":"x"}')])
    )
    final = chat_completion_json(
        content="Done.", finish_reason="stop", usage={"prompt_tokens": 5, "completion_tokens": 1}
    )
    with auditor.run("outer") as outer:
        recorded = aa.record_step(first)
        with auditor.run("inner") as inner:
            aa.record_step(anthropic_message_json(content=[{"type": "text", "text": "sub"}]))
        aa.record_step(final)

    assert recorded == to_response(first)[0]
    outer_steps = steps(store, outer.run_id)
    assert [s["iter"] for s in outer_steps] == [1, 2]
    assert [s["iter"] for s in steps(store, inner.run_id)] == [1]
    assert {k: v for k, v in outer_steps[0].items() if k != "step_ms"} == {
        "iter": 1,
        "text_len": len("Let me look that up."),
        "text": "Let me look that up.",
        "model": "openai/gpt-4o-mini-2024-07-18",
        "finish_reason": "tool_calls",
        "in_tokens": 100,
        "out_tokens": 20,
        "thinking_tokens": 8,
        "cache_read_tokens": 64,
        "requested_tool_calls": [{"id": "call_1", "name": "search"}],
    }
    run = store.get_run(outer.run_id)
    assert run is not None
    assert (run.steps, run.input_tokens, run.output_tokens, run.thinking_tokens) == (2, 105, 21, 8)
    resolved = store.get_logs(outer.run_id, event_types=["resolved_model"])
    assert [e.payload for e in resolved] == [{"model": "openai/gpt-4o-mini-2024-07-18"}]


def test_record_step_explicit_iter(store: aa.MemoryStore, auditor: aa.Auditor) -> None:
    with auditor.run("r") as run:
        aa.record_step(aa.Response(text="a"), iter=7)
    assert [s["iter"] for s in steps(store, run.run_id)] == [7]
    # Outside a run nothing is recorded and nothing raises, whatever the arguments.
    assert aa.record_step(aa.Response(), iter=0) is None


def test_record_step_outside_a_run_does_nothing(store: aa.MemoryStore) -> None:
    assert aa.record_step(chat_completion_json()) is None
    assert store.list_runs(aa.RunFilter()) == []


def test_an_unreadable_shape_records_a_step_and_a_fault_never_an_exception(
    store: aa.MemoryStore, auditor: aa.Auditor, caplog: pytest.LogCaptureFixture
) -> None:
    with auditor.run("r") as run:
        recorded = aa.record_step({"model": "mystery-1", "what": "is this"})
        aa.record_step(object())
        aa.record_step(chat_completion_json(usage={"prompt_tokens": "many", "completion_tokens": 1}))

    assert recorded == aa.Response(model="mystery-1")
    recorded_steps = steps(store, run.run_id)
    assert [s["iter"] for s in recorded_steps] == [1, 2, 3]
    assert recorded_steps[0]["model"] == "mystery-1"
    assert recorded_steps[2]["out_tokens"] == 1  # the readable part of a bad usage
    assert auditor.faults.counts().get("record_step.shape") == 3
    # logged once per kind per run
    assert sum("record_step" in r.getMessage() for r in caplog.records) == 1


def test_strict_mode_raises_on_an_unreadable_shape(store: aa.MemoryStore) -> None:
    auditor = aa.Auditor(store, strict=True)
    with auditor.run("r"), pytest.raises(ValueError, match="unrecognized response shape"):
        aa.record_step(object())


def test_steps_recorded_from_several_threads_number_without_repeats(
    store: aa.MemoryStore, auditor: aa.Auditor
) -> None:
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    def record(n: int) -> None:
        aa.record_step(aa.Response(text=str(n), model="x/y"))

    with auditor.run("r") as run, ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(contextvars.copy_context().run, record, n) for n in range(60)]:
            future.result()
    assert sorted(s["iter"] for s in steps(store, run.run_id)) == list(range(1, 61))
