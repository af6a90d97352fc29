"""Recorded text never reaches the terminal as control characters (issue 11, defect 14).

Everything in an audit database is untrusted: a tool result, a prompt, a run name may
carry ANSI/OSC escape sequences, carriage returns, backspaces, C1 controls or bidi
overrides. The real `agentaudit` command runs in a subprocess over a database recorded
through the public API, and its terminal output must show all of them as visible
escapes (``\\x1b``, ``\\r``, ``\\u202e``), print rich markup literally, and keep its own
colours; its JSON output must keep the recorded text exact.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import agentaudit as aa
from agentaudit.cli._terminal import visible
from agentaudit.stores.sqlite import SQLiteStore
from tests.test_cli import record_agent_run

# -- what an attacker records ----------------------------------------------------------------

ERASE = "\x1b[2K\x1b[1A"                                   # erase the line, move up
TITLE = "\x1b]0;pwned\x07"                                 # OSC 0: set the window title
LINK = "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\"       # OSC 8 hyperlink
MARKUP = "[bold red]x[/] [link=http://evil]click[/link]"   # rich markup

NAME = "agent\x1b[31mRED\u202eevil"
CALLER = "user\x1b]0;t\x07:1"
INPUT = "first line\x1b[2J\nsecond\tline\rOVER"
OUTPUT = "done\x9b2J\x08\x08"
ERROR = "boom\x1b[5m\x85end"
META = {"k\x1b[1m": "v\x9bal", "link": LINK}
MODEL = "mod\x1b[7mel"
NARRATION = "thinking\x1b[8m hidden\nnext " + MARKUP
TOOL = "t\x1b[4mool"
ARGS = {"a": "\x1b[2J"}
RESULT = ERASE + "evil" + TITLE + " " + MARKUP + " safe\rEVIL"
EVENT = "cust\x1bom"
PAYLOAD = {"key\x1b[0m": "val\u202e\x07"}
LOGGED = "err\x1b[31mor\u2028x"
CHILD = "child\x1b[1A"
EVIL_ID = "evil\x1b[2Jid-0001"
EVIL_ID_2 = "evil\x1b[2Jid-0002"
HOST = "host\x1b]0;x\x07"

# The same, as the terminal shows them.
SHOWN = {
    "name": "agent\\x1b[31mRED\\u202eevil",
    "caller": "user\\x1b]0;t\\x07:1",
    "model": "mod\\x1b[7mel",
    "tool": "t\\x1b[4mool",
    "result": "\\x1b[2K\\x1b[1Aevil\\x1b]0;pwned\\x07 " + MARKUP + " safe\\rEVIL",
    "event": "cust\\x1bom",
    "logged": "err\\x1b[31mor\\u2028x",
    "child": "child\\x1b[1A",
    "evil_id": "evil\\x1b[2Jid-0001",
    "host": "host\\x1b]0;x\\x07",
}

SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own styling: Select Graphic Rendition only
KEPT = {"\n", "\u200c", "\u200d"}


def hidden_characters(text: str) -> list[str]:
    """Every character of ``text`` a terminal would act on (or hide) rather than show."""
    return [
        f"U+{ord(c):04X}" for c in text
        if c not in KEPT and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"}
    ]


def assert_inert(data: bytes) -> str:
    """``data`` (a command's output) is UTF-8 with no control character but newline."""
    for byte in (b"\x1b", b"\x07", b"\x08", b"\r", b"\xc2\x9b", b"\xe2\x80\xae"):
        assert byte not in data, f"raw {byte!r} in output:\n{data!r}"
    text = data.decode("utf-8")  # strict: no stray C1 byte either
    assert hidden_characters(text) == [], text
    return text


@pytest.fixture
def hostile_db(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.db"
    store = SQLiteStore(path)
    auditor = aa.Auditor(store, strict=True)
    record_agent_run(auditor)  # an ordinary run next to the hostile ones
    w = auditor.start_run(NAME, caller=CALLER, input=INPUT, metadata=META, run_id=EVIL_ID,
                          parent_run_id=None)
    w.on_step(1, aa.Response(text=NARRATION, model=MODEL, finish_reason="tool_calls",
                             usage=aa.Usage(input_tokens=10, output_tokens=5)))
    w.on_tool(aa.ToolCall(TOOL, ARGS, "c1"), RESULT, duration_ms=3.0)
    w.log_event(EVENT, PAYLOAD)
    w.log_error(LOGGED)
    child = auditor.start_run(CHILD, parent_run_id=EVIL_ID)
    child.close()
    w.close(aa.RunStats(status="failed", error=ERROR, output=OUTPUT))
    # A second id sharing the prefix "evil" (for the ambiguous-prefix message), on a
    # hostile host, silent for hours (for `reap`).
    long_ago = datetime.now(timezone.utc) - timedelta(hours=5)
    store.start_run(aa.Run(run_id=EVIL_ID_2, name=NAME, caller=CALLER, started_at=long_ago,
                           host=HOST, pid=9))
    store.close()
    return path


def run_cli(db: Path, *args: str, color: bool = False, expect: int = 0) -> subprocess.CompletedProcess[bytes]:
    """The real command, in its own process, its output a pipe as wide as a wide terminal."""
    env = {k: v for k, v in os.environ.items() if k not in {"FORCE_COLOR", "NO_COLOR", "TERM"}}
    env["COLUMNS"] = "200"
    env["TERM"] = "xterm-256color" if color else "dumb"
    if color:
        env["FORCE_COLOR"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "agentaudit.cli", "--db", str(db), *args],
        capture_output=True, env=env, check=False, timeout=60,
    )
    assert result.returncode == expect, (result.stdout, result.stderr)
    return result


# -- the terminal views ------------------------------------------------------------------------


def test_show_prints_every_recorded_field_visibly(hostile_db: Path) -> None:
    out = assert_inert(run_cli(hostile_db, "show", EVIL_ID).stdout)
    for key in ("name", "caller", "model", "tool", "result", "event", "logged", "child", "evil_id"):
        assert SHOWN[key] in out, key
    assert "output    done\\x9b2J\\x08\\x08" in out
    assert "error     boom\\x1b[5m\\x85end" in out
    assert '{"k\\u001b[1m": "v\\x9bal", "link": "\\u001b]8;;http://evil' in out  # JSON's own escapes, and ours
    assert 't\\x1b[4mool({"a":"\\u001b[2J"})  id c1' in out
    assert '{"key\\u001b[0m": "val\\u202e\\u0007"}' in out
    # Text blocks keep their newlines and tabs; a bare CR is shown, not obeyed.
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if "first line\\x1b[2J" in line)
    assert "second  line\\rOVER" in lines[first + 1]  # the tab expanded by the table
    narration = next(i for i, line in enumerate(lines) if "thinking\\x1b[8m hidden" in line)
    assert ("next " + MARKUP) in lines[narration + 1]


def test_runs_prints_names_callers_models_and_ids_visibly(hostile_db: Path) -> None:
    out = assert_inert(run_cli(hostile_db, "runs").stdout)
    for key in ("name", "caller", "model", "child"):
        assert SHOWN[key] in out, key
    assert "evil\\x1b" in out  # ids are shortened to 8 characters, then made visible
    assert "research-agent" in out and "openai/gpt-4o-mini" in out


def test_tail_prints_one_visible_line_per_event(hostile_db: Path) -> None:
    out = assert_inert(run_cli(hostile_db, "tail", "-n", "100").stdout)
    lines = out.splitlines()
    hostile = [line for line in lines if line[20:].startswith("evil\\x1b")]
    assert len(hostile) == 6  # step, resolved_model, tool_call, tool_result, custom, error
    assert any(SHOWN["result"] in line for line in hostile)
    # In one line, a recorded newline is shown as \n; the step's own layout is spaces.
    assert any(" ms  thinking\\x1b[8m hidden\\nnext " + MARKUP in line for line in hostile)
    assert any(SHOWN["event"] in line and "val\\u202e\\u0007" in line for line in hostile)
    assert any(SHOWN["logged"] in line for line in hostile)


@pytest.mark.parametrize("by", ["name", "caller", "model"])
def test_stats_prints_group_labels_visibly(hostile_db: Path, by: str) -> None:
    out = assert_inert(run_cli(hostile_db, "stats", "--by", by).stdout)
    assert SHOWN[by] in out


def test_verify_and_reap_print_run_ids_visibly(hostile_db: Path) -> None:
    one = assert_inert(run_cli(hostile_db, "verify", EVIL_ID).stdout)
    assert f"ok: run {SHOWN['evil_id']}, 6 events" in one
    every = assert_inert(run_cli(hostile_db, "verify", "--all").stdout)
    assert "verified 4 runs: 4 intact, 0 broken" in every

    conn = sqlite3.connect(hostile_db)  # a plain SQL edit of the hostile run's tool result
    conn.execute(
        "UPDATE events SET payload = json_set(payload, '$.result', 'x') WHERE run_id = ? AND sequence = 4",
        (EVIL_ID,),
    )
    conn.commit()
    conn.close()
    broken = assert_inert(run_cli(hostile_db, "verify", "--all", expect=1).stdout)
    assert f"BROKEN run {SHOWN['evil_id']} at sequence 4" in broken

    reaped = assert_inert(run_cli(hostile_db, "reap", "--stale-after", "2h").stdout)
    assert "abandoned evil\\x1b[2Jid-0002" in reaped


def test_an_error_quoting_recorded_ids_is_visible(hostile_db: Path) -> None:
    result = run_cli(hostile_db, "show", "evil", expect=2)
    assert result.stdout == b""
    err = assert_inert(result.stderr)
    assert "ambiguous" in err and SHOWN["evil_id"] in err


def test_the_host_is_shown_visibly(hostile_db: Path) -> None:
    out = assert_inert(run_cli(hostile_db, "show", EVIL_ID_2).stdout)
    assert f"process  {SHOWN['host']} pid 9" in out


@pytest.mark.parametrize(
    "args",
    [["show", EVIL_ID], ["runs"], ["tail", "-n", "100"], ["stats", "--by", "name"], ["verify", EVIL_ID]],
    ids=["show", "runs", "tail", "stats", "verify"],
)
def test_with_colour_the_only_escapes_are_our_own_styling(hostile_db: Path, args: list[str]) -> None:
    data = run_cli(hostile_db, *args, color=True).stdout
    text = data.decode("utf-8")
    if args[0] != "verify":  # verify prints plain lines
        assert SGR.search(text), "FORCE_COLOR=1 should style the output"
    plain = SGR.sub("", text)
    assert "\x1b" not in plain
    assert_inert(plain.encode())
    if args[0] == "show":
        assert SHOWN["result"] in plain and "\\u001b]8;;http://evil" in plain
        assert "\x1b]8;" not in text  # no OSC 8 hyperlink


def test_rich_markup_prints_literally(hostile_db: Path) -> None:
    for color in (False, True):
        for args in (["show", EVIL_ID], ["tail", "-n", "100"]):
            out = SGR.sub("", run_cli(hostile_db, *args, color=color).stdout.decode())
            assert MARKUP in out, (args, color)
    assert "Let me search [red]first[/red]." in out  # the ordinary run's narration, in tail


# -- JSON stays exact ------------------------------------------------------------------------------


def json_bytes_inert(data: bytes) -> None:
    """JSON escapes every C0 control: none reaches the terminal raw."""
    for byte in (b"\x1b", b"\x07", b"\x08", b"\r"):
        assert byte not in data


def test_show_json_round_trips_the_recorded_text(hostile_db: Path) -> None:
    data = run_cli(hostile_db, "show", EVIL_ID, "--json").stdout
    json_bytes_inert(data)
    shown = json.loads(data)
    run = shown["run"]
    assert (run["run_id"], run["name"], run["caller"]) == (EVIL_ID, NAME, CALLER)
    assert (run["input"], run["output"], run["error"]) == (INPUT, OUTPUT, ERROR)
    assert (run["metadata"], run["model"]) == (META, MODEL)
    events = {e["event_type"]: e["payload"] for e in shown["events"]}
    assert events["step"]["text"] == NARRATION
    assert events["tool_call"]["name"] == TOOL and json.loads(events["tool_call"]["args"]) == ARGS
    assert events["tool_result"]["result"] == RESULT
    assert events[EVENT] == PAYLOAD
    assert events["error"]["message"] == LOGGED
    assert [c["name"] for c in shown["children"]] == [CHILD]


def test_runs_stats_tail_verify_json_round_trip(hostile_db: Path) -> None:
    runs = run_cli(hostile_db, "runs", "--json").stdout
    json_bytes_inert(runs)
    evil = next(r for r in json.loads(runs) if r["run_id"] == EVIL_ID)
    assert (evil["name"], evil["caller"], evil["model"], evil["metadata"]) == (NAME, CALLER, MODEL, META)

    stats = run_cli(hostile_db, "stats", "--by", "caller", "--json").stdout
    json_bytes_inert(stats)
    assert CALLER in {row["caller"] for row in json.loads(stats)}

    tail = run_cli(hostile_db, "tail", "-n", "100", "--json").stdout
    json_bytes_inert(tail)
    events = [json.loads(line) for line in tail.decode().split("\n")[:-1]]
    assert {e["event_type"] for e in events} >= {EVENT}
    assert next(e for e in events if e["event_type"] == "tool_result" and e["run_id"] == EVIL_ID)[
        "payload"]["result"] == RESULT

    verify = run_cli(hostile_db, "verify", EVIL_ID, "--json").stdout
    json_bytes_inert(verify)
    assert json.loads(verify)["run_id"] == EVIL_ID


def test_export_jsonl_round_trips_the_recorded_text(hostile_db: Path) -> None:
    data = run_cli(hostile_db, "export").stdout
    json_bytes_inert(data)
    evil = next(r for r in map(json.loads, data.decode().split("\n")[:-1]) if r["run_id"] == EVIL_ID)
    assert (evil["name"], evil["input"], evil["output"], evil["error"]) == (NAME, INPUT, OUTPUT, ERROR)
    assert [e["payload"]["result"] for e in evil["events"] if e["event_type"] == "tool_result"] == [RESULT]
    per_event = run_cli(hostile_db, "export", "--events").stdout
    json_bytes_inert(per_event)
    types = [json.loads(line)["event_type"] for line in per_event.decode().split("\n")[:-1]]
    assert EVENT in types


# -- the escaping scheme itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "one_line", "block"),
    [
        ("plain text, ünïcödé, 中文, emoji 👍", "plain text, ünïcödé, 中文, emoji 👍",
         "plain text, ünïcödé, 中文, emoji 👍"),
        ("a\x1b[31mb", "a\\x1b[31mb", "a\\x1b[31mb"),
        ("bell\x07 nul\x00 del\x7f", "bell\\x07 nul\\x00 del\\x7f", "bell\\x07 nul\\x00 del\\x7f"),
        ("c1\x9b\x85", "c1\\x9b\\x85", "c1\\x9b\\x85"),
        ("a\tb\nc", "a\\tb\\nc", "a\tb\nc"),
        ("crlf\r\nbare\rcr", "crlf\\r\\nbare\\rcr", "crlf\nbare\\rcr"),
        ("bidi\u202e\u2066\u200f", "bidi\\u202e\\u2066\\u200f", "bidi\\u202e\\u2066\\u200f"),
        ("zw\u200b\ufeff\u2028\u2029", "zw\\u200b\\ufeff\\u2028\\u2029", "zw\\u200b\\ufeff\\u2028\\u2029"),
        ("tag\U000e0041", "tag\\U000e0041", "tag\\U000e0041"),
        ("family 👨\u200d👩\u200d👧, nbsp\u00a0", "family 👨\u200d👩\u200d👧, nbsp\u00a0",
         "family 👨\u200d👩\u200d👧, nbsp\u00a0"),
        (MARKUP, MARKUP, MARKUP),
    ],
)
def test_visible(text: str, one_line: str, block: str) -> None:
    assert visible(text) == one_line
    assert visible(text, multiline=True) == block
    assert hidden_characters(visible(text)) == []
    assert hidden_characters(visible(text, multiline=True).replace("\t", "")) == []


def test_visible_leaves_no_control_character_of_any_kind() -> None:
    every = "".join(chr(c) for c in range(0x3000)) + "\ufeff\ufff9\U000e0001\U000e007f"
    assert hidden_characters(visible(every)) == []
    assert set(hidden_characters(visible(every, multiline=True))) <= {"U+0009"}
    assert visible(None) == "None" and visible(42) == "42"
