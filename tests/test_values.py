"""Model validation, serialization that never raises, caps, redaction, the hash chain."""

import dataclasses
import datetime as dt
import itertools
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import agentaudit as aa
from agentaudit._caps import cap
from agentaudit._chain import verify_events
from agentaudit._serialize import canonical_json, to_jsonable
from agentaudit._verify import header_hash_of, record_of_run


# -- model types -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: aa.Usage(input_tokens=-1), "input_tokens must be >= 0"),
        (lambda: aa.Usage(output_tokens=1.5), "output_tokens must be an int"),
        (lambda: aa.ToolCall(""), "ToolCall.name must not be empty"),
        (lambda: aa.ToolCall("t", "{not json"), "not JSON"),
        (lambda: aa.ToolCall("t", 3), "must be a str or a mapping"),
        (lambda: aa.RunStats(status="exploded"), "status must be one of"),
        (lambda: aa.RunStats(cost_usd=-1.0), "cost_usd must be a finite number >= 0"),
        (lambda: aa.Run(run_id="r", name=""), "Run.name must not be empty"),
        (lambda: aa.RunFilter(since=dt.datetime(2026, 1, 1)), "timezone-aware"),
        (lambda: aa.RunFilter(limit=-1), "limit must be >= 0"),
        (lambda: aa.Response(tool_calls=["search"]), "ToolCall values"),
    ],
)
def test_bad_values_raise_value_errors_naming_the_problem(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_tool_call_arguments_are_canonical_json():
    assert aa.ToolCall("t", '{ "b": 1, "a": [1, 2] }').arguments == '{"a":[1,2],"b":1}'
    assert aa.ToolCall("t", {"b": 1, "a": "é"}).arguments == '{"a":"é","b":1}'
    assert aa.ToolCall("t", None).arguments == "{}"
    assert aa.ToolCall.lenient("t", "{broken").arguments == '"{broken"'
    assert aa.ToolCall.lenient("t", 5).args == {"input": 5}


def test_values_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        aa.Usage().input_tokens = 3


def test_run_filter_takes_one_or_several_statuses():
    assert aa.RunFilter(status="failed").status == (aa.RunStatus.FAILED,)
    assert aa.RunFilter(status=["failed", aa.RunStatus.TIMEOUT]).status == (
        aa.RunStatus.FAILED, aa.RunStatus.TIMEOUT
    )


# -- serialization ---------------------------------------------------------------------
class Model(BaseModel):
    name: str
    when: dt.datetime


@dataclasses.dataclass
class Point:
    x: int
    y: float


def test_common_types_get_stable_encodings():
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    cyclic: dict = {"a": 1}
    cyclic["self"] = cyclic
    value = {
        "when": when, "bytes": b"hi", "raw": b"\xff\x00", "set": {3, 1, 2}, "point": Point(1, 2.5),
        "model": Model(name="m", when=when), "nan": math.nan, "inf": -math.inf, "cycle": cyclic,
        "surrogate": "a\udc00b", "obj": object(), 1: "int key",
    }
    out = to_jsonable(value)
    assert out["when"] == "2026-01-02T03:04:05+00:00"
    assert out["bytes"] == "hi" and out["raw"] == "base64:/wA="
    assert out["set"] == [1, 2, 3]
    assert out["point"] == {"x": 1, "y": 2.5}
    assert out["model"] == {"name": "m", "when": "2026-01-02T03:04:05Z"}
    assert (out["nan"], out["inf"]) == ("NaN", "-Infinity")
    assert out["cycle"] == {"a": 1, "self": "<cycle dict>"}
    assert out["surrogate"] == "a\ufffdb"
    assert out["obj"] == "<unserializable object>"
    assert out["1"] == "int key"
    json.dumps(out, allow_nan=False).encode("utf-8")


def test_a_raising_object_becomes_a_placeholder():
    class Evil:
        def model_dump(self, **kw):
            raise RuntimeError("no")

    out = to_jsonable({"evil": Evil()})
    assert out["evil"].startswith("<unserializable") and "Evil" in out["evil"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary() | st.datetimes(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    | st.frozensets(st.integers(), max_size=4),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=200, deadline=None)
def test_canonical_json_never_raises_and_round_trips_stably(value):
    text = canonical_json(value)
    text.encode("utf-8")
    assert canonical_json(json.loads(text)) == text


# -- caps ------------------------------------------------------------------------------
@given(st.text(), st.integers(min_value=0, max_value=64))
@settings(max_examples=300, deadline=None)
def test_cap_never_splits_a_character_and_counts_dropped_bytes(text, limit):
    out, cut = cap(text, limit)
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        assert (out, cut) == (text, False)
        return
    kept, marker = out.rsplit("…[+", 1)
    kept_bytes = kept.encode("utf-8", "surrogatepass")
    assert cut and len(kept_bytes) <= limit and raw.startswith(kept_bytes)
    assert marker == f"{len(raw) - len(kept_bytes)} bytes]"


# -- redaction -------------------------------------------------------------------------
SECRETS = {
    "openai_key": "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    "anthropic_key": "sk-ant-api03-abcdefghijklmnopqrstuv",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_" + "a1" * 18,
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
}


@pytest.mark.parametrize(("kind", "secret"), SECRETS.items())
def test_well_known_formats_are_masked_everywhere(kind, secret):
    store = aa.MemoryStore()
    w = aa.Auditor(store).start_run("a", input=f"use {secret}")
    w.on_step(1, aa.Response(text=f"my key is {secret} ok"))
    w.on_tool(aa.ToolCall("t", {"note": secret}), f"got {secret}")
    w.log_error(f"failed with {secret}")
    w.close(aa.RunStats(output=secret))
    dump = json.dumps([e.payload for e in store.get_logs(w.run_id)]) + repr(store.get_run(w.run_id))
    assert secret.split("\n")[0] not in dump
    assert f"[REDACTED:{kind}]" in dump


def test_authorization_values_keep_their_scheme_and_english_is_left_alone():
    policy = aa.RedactionPolicy()
    assert policy.mask_secrets("Authorization: Bearer abc.def-123456789xyz") == "Authorization: Bearer [REDACTED:bearer]"
    assert policy.mask_secrets("Authorization: Basic dXNlcjpwYXNzd29yZA==") == "Authorization: Basic [REDACTED:basic_auth]"
    assert policy.mask_secrets("Basic understanding of tokens") == "Basic understanding of tokens"


def test_secret_keys_are_masked_but_lookalikes_are_not():
    store = aa.MemoryStore()
    w = aa.Auditor(store).start_run("a")
    w.on_tool(aa.ToolCall("login", {"user": "bob", "password": "hunter2", "max_tokens": 5,
                                    "headers": {"X-Api-Key": "k1", "authToken": "t"}}), "ok")
    w.close()
    args = json.loads(store.get_logs(w.run_id)[0].payload["args"])
    assert args == {"user": "bob", "password": "[REDACTED:field]", "max_tokens": 5,
                    "headers": {"X-Api-Key": "[REDACTED:field]", "authToken": "[REDACTED:field]"}}


@pytest.mark.parametrize("tool", ["mcp_call", "email_send", "http_get", "http_post"])
def test_narration_of_a_step_firing_a_secret_tool_is_withheld(tool):
    store = aa.MemoryStore()
    w = aa.Auditor(store).start_run("a")
    w.on_step(1, aa.Response(text="sending the secret now", tool_calls=[aa.ToolCall(tool)]))
    w.on_step(2, aa.Response(text="plain", tool_calls=[aa.ToolCall("search")]))
    w.close()
    first, second = (e.payload for e in store.get_logs(w.run_id))
    assert first["text_redacted"] is True and "text" not in first
    assert second["text"] == "plain"


def test_secret_tool_lists_are_configurable_and_mask_runs_last():
    store = aa.MemoryStore()
    policy = aa.RedactionPolicy(secret_tools=["vault_read"], secret_tool_prefixes=[],
                                mask=lambda s: s.replace("alice", "[user]"))
    w = aa.Auditor(store, redaction=policy).start_run("a")
    w.on_step(1, aa.Response(text="reading", tool_calls=[aa.ToolCall("vault_read")]))
    w.on_step(2, aa.Response(text="alice asked", tool_calls=[aa.ToolCall("http_get")]))
    w.close()
    first, second = (e.payload for e in store.get_logs(w.run_id))
    assert first.get("text_redacted") is True and second["text"] == "[user] asked"


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200), st.sampled_from(list(SECRETS.values())))
@settings(max_examples=150, deadline=None)
def test_an_embedded_secret_never_survives_masking(prefix, secret):
    out = aa.RedactionPolicy().mask_secrets(f"{prefix} {secret} {prefix}")
    assert secret.split("\n")[0] not in out


# -- hash chain -----------------------------------------------------------------------
def recorded_events(store=None):
    store = store or aa.MemoryStore()
    w = aa.Auditor(store).start_run("a")
    for i in range(5):
        w.log_event("e", {"i": i})
    w.close()
    return w.run_id, store.get_logs(w.run_id)


def test_chain_starts_at_the_run_header_and_links():
    store = aa.MemoryStore()
    run_id, events = recorded_events(store)
    header = header_hash_of(record_of_run(store.get_run(run_id)), None)
    assert events[0].prev_hash == header and all(len(e.hash) == 64 for e in events)
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert verify_events(run_id, events).ok


@pytest.mark.parametrize(
    ("tamper", "broken"),
    [
        (lambda ev: [*ev[:2], dataclasses.replace(ev[2], payload={"i": 99}), *ev[3:]], 3),
        (lambda ev: ev[:1] + ev[2:], 2),
        (lambda ev: [ev[0], ev[2], ev[1], *ev[3:]], 2),
        (lambda ev: [*ev[:3], dataclasses.replace(ev[3], event_type="x"), *ev[4:]], 4),
    ],
)
def test_verification_names_the_first_broken_sequence(tamper, broken):
    run_id, events = recorded_events()
    result = verify_events(run_id, tamper(events))
    assert not result.ok and result.broken_sequence == broken and result.reason
