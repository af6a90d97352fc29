"""``agentaudit verify`` and ``agentaudit erase``: the integrity commands.

Why here: they are the command line of the chain (`_chain`, `_verify`, `_keys`), and
they must hold up on a file someone tampered with. `verify` reads every run as
stored, reports each one intact, erased or broken (with every problem found), goes on
after a broken or malformed run, and never stops with a traceback: a forged run
after a malformed one is still reported. Keys come from ``--key-file`` or the
environment (``AGENTAUDIT_KEY``, ``AGENTAUDIT_KEY_FILE``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

from .._chain import ERASE_FIELDS
from .._errors import RunNotFoundError
from .._keys import Keyring, keyring_from, load_key_file
from .._model import VerifyResult
from . import _checkpoints
from ._params import CliError, open_reader, open_writer
from ._terminal import visible

__all__ = ["erase", "register", "verify"]

F = TypeVar("F", bound=Callable[..., Any])


def _db_option(fn: F) -> F:
    return click.option(
        "--db", "db", default=None, metavar="PATH",
        help="The audit database (default: the group's --db).",
    )(fn)


def _keyring(key_file: str | None) -> Keyring | None:
    try:
        return load_key_file(key_file) if key_file else keyring_from(None)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None


def _resolve(store: Any, run: str) -> str:
    """The run id ``run`` names (a unique prefix will do). A run whose row is gone
    but whose events remain is named by its full id."""
    resolve = getattr(store, "resolve_run_id", None)
    try:
        return str(resolve(run)) if resolve is not None else run
    except RunNotFoundError:
        orphans = getattr(store, "orphaned_run_ids", None)
        if orphans is not None and run in orphans():
            return run
        raise


def _results(store: Any, runs: Iterable[str], all_runs: bool, keyring: Keyring | None,
             require_key: bool | None) -> Iterator[VerifyResult]:
    if not all_runs:
        for run in runs:
            yield store.verify(_resolve(store, run), key=keyring, require_key=require_key)
        return
    every = getattr(store, "verify_all", None)
    if every is not None:
        yield from every(key=keyring, require_key=require_key)
        return
    for found in store.iter_runs():
        yield store.verify(found.run_id, key=keyring, require_key=require_key)


def _record(result: VerifyResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "ok": result.ok,
        "state": result.state,
        "events": result.events,
        "broken_sequence": result.broken_sequence,
        "reason": result.reason,
        "problems": list(result.problems),
        "key_id": result.key_id,
    }


def _line(store: Any, result: VerifyResult, single: bool) -> str | None:
    run_id = visible(result.run_id)
    if result.state == "broken":
        where = "" if result.broken_sequence is None else f" at sequence {result.broken_sequence}"
        lines = [f"BROKEN run {run_id}{where}: {visible(result.reason)}"]
        lines += [f"  - {visible(problem)}" for problem in result.problems[1:]]
        return "\n".join(lines)
    keyed = f", keyed ({result.key_id})" if result.key_id else ""
    if result.state == "erased":
        return f"erased: run {run_id}, {result.events} events, content erased, the rest intact{keyed}"
    if not single:
        return None
    run = store.get_run(result.run_id)
    running = run is not None and not run.status.is_terminal
    sealed = " (running: its row is sealed when it ends)" if running else ", row sealed"
    return f"ok: run {run_id}, {result.events} events, chain intact{sealed}{keyed}"


@click.command()
@click.argument("runs", nargs=-1, metavar="[RUN]...")
@click.option("--all", "all_runs", is_flag=True, help="Verify every run (and runs whose row is gone).")
@click.option("--key-file", "key_file", metavar="FILE", default=None,
              help="The chain's keys, one secret per line (default: $AGENTAUDIT_KEY or "
                   "$AGENTAUDIT_KEY_FILE).")
@click.option("--accept-unkeyed", is_flag=True,
              help="With a key, accept runs recorded without one (by default they are broken).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@_checkpoints.verify_options
@_db_option
@click.pass_context
def verify(
    ctx: click.Context, /, runs: tuple[str, ...], all_runs: bool, key_file: str | None,
    accept_unkeyed: bool, as_json: bool, db: str | None, **checks: Any,
) -> None:
    """Check runs: intact, erased, or broken (and where). Exit status 1 when one is broken."""
    if _checkpoints.verify_extras(
        ctx, db=db, as_json=as_json, run=" ".join(runs) or None, all_runs=all_runs, **checks
    ):
        return
    if bool(runs) == all_runs:
        raise click.UsageError("give RUN ids or --all (not both)")
    keyring = _keyring(key_file)
    store = open_reader(ctx, db)
    single = len(runs) == 1
    counts = {"intact": 0, "erased": 0, "broken": 0}
    records = []
    for result in _results(store, runs, all_runs, keyring, False if accept_unkeyed else None):
        counts[result.state] += 1
        if as_json:
            records.append(_record(result))
            continue
        line = _line(store, result, single)
        if line is not None:
            click.echo(line)
    if as_json:
        click.echo(json.dumps(records[0] if single else records, ensure_ascii=False, indent=2))
    elif not single:
        checked = sum(counts.values())
        erased = f", {counts['erased']} erased" if counts["erased"] else ""
        click.echo(
            f"verified {checked} runs: {counts['intact']} intact, {counts['broken']} broken{erased}"
        )
    if counts["broken"]:
        ctx.exit(1)


@click.command()
@click.argument("run")
@click.option("--fields", default=None, metavar="LIST",
              help=f"What to erase, comma-separated: {','.join(ERASE_FIELDS)} (default: all).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_db_option
@click.pass_context
def erase(ctx: click.Context, run: str, fields: str | None, yes: bool, db: str | None) -> None:
    """Remove a finished run's content for a privacy request; its chain still verifies."""
    chosen = [f.strip() for f in fields.split(",") if f.strip()] if fields is not None else None
    if chosen is not None:
        unknown = sorted(set(chosen) - set(ERASE_FIELDS))
        if unknown or not chosen:
            raise click.UsageError(f"--fields takes some of {','.join(ERASE_FIELDS)}; got {fields!r}")
    store = open_writer(ctx, db)
    if not hasattr(store, "erase"):
        raise CliError("this store cannot erase content")
    run_id = _resolve(store, run)
    if not yes:
        what = ", ".join(chosen) if chosen else "all content"
        click.confirm(f"Erase {what} of run {visible(run_id)}? This cannot be undone.", abort=True)
    count = store.erase(run_id, fields=chosen)
    state = store.verify(run_id).state
    click.echo(f"erased {count} values of run {visible(run_id)}; verify: {state}")


def register(cli: click.Group) -> None:
    """Add ``verify`` and ``erase`` to the ``agentaudit`` group."""
    cli.add_command(verify)
    cli.add_command(erase)
