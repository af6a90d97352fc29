"""The command line of checkpoints, proofs, bundles, holds and retention.

``agentaudit signing-key``, ``checkpoint``, ``prove``, ``hold``, ``release`` and
``retention`` are commands of their own; ``verify --checkpoints/--proof/--bundle``
and ``export --bundle`` are options added to those commands (see `verify_options`,
`verify_extras`, `bundle_options`, `export_bundle`), so their code lives here.
They work alike on a SQLite file and on a server (``--db postgresql://…``,
``mysql://…``), where every process's checkpoints join one chain.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from .._checkpoints import (
    SIGNING_KEY_ENV,
    SINK_ENV,
    CheckpointPolicy,
    Verifier,
    generate_signing_key,
    hmac_verifiers,
    load_public_key,
    verify_proof,
)
from .._errors import CheckpointError
from .._model import RunFilter, RunStatus
from ._params import DEFAULT_DB, CliError, Moment, StaleAfter, open_reader, open_writer
from ._terminal import visible

__all__ = [
    "PUBLIC_KEY_ENV",
    "SIGNING_KEY_ENV",
    "SINK_ENV",
    "bundle_options",
    "export_bundle",
    "register",
    "verify_extras",
    "verify_options",
]

F = TypeVar("F", bound=Callable[..., Any])

PUBLIC_KEY_ENV = "AGENTAUDIT_PUBLIC_KEY"


def _path(ctx: click.Context, db: str | None) -> str:
    path = db or (ctx.find_root().obj or {}).get("db") or DEFAULT_DB
    if path.startswith("memory:"):
        raise CliError("checkpoints, proofs, bundles and holds are kept in a database: a SQLite "
                       "file or a server (postgresql://…, mysql://…)")
    return path


def _checkpointing_store(ctx: click.Context, db: str | None, signing_key: str | None, sink: str | None) -> Any:
    from ..stores import open_store
    from ..stores.sqlite import SQLiteStore

    path = _path(ctx, db)
    policy = CheckpointPolicy(interval=0, at_close=False, signing_key=signing_key, sink=sink)
    if "://" in path and not path.startswith("sqlite://"):
        # a server: the store takes the database's checkpoint lock, so this chains
        # to whatever any other process made
        store = open_store(path, checkpoints=policy)
    else:
        if path.startswith("sqlite://"):
            path = path[len("sqlite://"):].removeprefix("/")
        store = SQLiteStore(path, create=False, checkpoints=policy)
    ctx.call_on_close(store.close)
    return store


def _keyring() -> Any:
    """The chain keys for HMAC-signed checkpoints: `verify`'s ``--key-file`` when
    given, else the environment's."""
    from .._keys import keyring_from, load_key_file

    ctx = click.get_current_context(silent=True)
    key_file = ctx.params.get("key_file") if ctx is not None else None
    if key_file:
        try:
            return load_key_file(key_file)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    return keyring_from(None)


def _verifiers(public_keys: tuple[str, ...]) -> list[Verifier]:
    """The public keys given, and the chain keys (HMAC)."""

    found: list[Any] = []
    name = "agentaudit"
    for text in public_keys:
        verifier = load_public_key(text)
        found.append(verifier)
        name = verifier.name
    keyring = _keyring()
    if keyring is not None:
        found.extend(hmac_verifiers(name, keyring))
    return found


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _signing_key_option(fn: F) -> F:
    return click.option(
        "--signing-key", "signing_key", envvar=SIGNING_KEY_ENV, metavar="FILE",
        help=f"The Ed25519 private key (PEM) that signs (also ${SIGNING_KEY_ENV}).",
    )(fn)


def _sink_option(fn: F) -> F:
    return click.option(
        "--sink", "sink", envvar=SINK_ENV, metavar="FILE",
        help=f"Also append the checkpoint to this file, on another volume (also ${SINK_ENV}).",
    )(fn)


def _db_option(fn: F) -> F:
    return click.option("--db", "db", default=None, metavar="PATH",
                        help="The audit database: a SQLite file or a server URL (default: the group's --db).")(fn)


# -- commands ----------------------------------------------------------------------------


@click.command("signing-key")
@click.argument("file")
@click.option("--name", default="agentaudit", show_default=True,
              help="The key's name (the checkpoints' origin).")
def signing_key(file: str, name: str) -> None:
    """Create an Ed25519 signing key in FILE (readable by you only) and print its
    public key: give that to whoever verifies, keep FILE away from the database."""
    verifier = generate_signing_key(file, name)
    click.echo(verifier.vkey)


@click.command()
@_signing_key_option
@_sink_option
@click.option("--json", "as_json", is_flag=True, help="Print the checkpoint as JSON.")
@_db_option
@click.pass_context
def checkpoint(ctx: click.Context, signing_key: str | None, sink: str | None, as_json: bool, db: str | None) -> None:
    """Make a signed checkpoint now, over every run finished or grown since the last."""
    store = _checkpointing_store(ctx, db, signing_key, sink)
    made = store.checkpoint()
    if as_json:
        _print_json(json.loads(made.record()) if made else None)
    elif made is None:
        click.echo("nothing new since the last checkpoint")
    else:
        body = made.body
        click.echo(f"checkpoint {body.seq}: {len(made.entries)} new entries, {body.size} in all")
    if store.checkpoint_failures:
        raise CliError(f"the checkpoint was made but the sink {sink} refused it (see the log)")


@click.command()
@click.argument("run")
@click.option("--output", "-o", default="-", metavar="FILE", help="Write the proof here.")
@_db_option
@click.pass_context
def prove(ctx: click.Context, run: str, output: str, db: str | None) -> None:
    """Print an inclusion proof of RUN in the newest checkpoint (JSON). Check it
    with `agentaudit verify --proof FILE --public-key KEY`, with no database."""
    _path(ctx, db)
    store = open_reader(ctx, db)
    run_id = store.resolve_run_id(run)
    text = json.dumps(store.prove(run_id), ensure_ascii=False, indent=2) + "\n"
    if output == "-":
        click.echo(text, nl=False)
    else:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        click.echo(f"wrote the proof of run {visible(run_id)} to {output}", err=True)


def _hold_filter(name: str | None, caller: str | None, statuses: tuple[str, ...],
                 since: datetime | None, until: datetime | None) -> RunFilter | None:
    if not (name or caller or statuses or since or until):
        return None
    return RunFilter(name=name, caller=caller, status=statuses or None, since=since, until=until)


def _hold_options(fn: F) -> F:
    options = [
        click.argument("runs", nargs=-1),
        click.option("--name", help="Every run with this name."),
        click.option("--caller", help="Every run of this caller."),
        click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in RunStatus]),
                     help="Every run with this status; repeat for several."),
        click.option("--since", type=Moment(), help="Every run started at or after: 7d, or a date."),
        click.option("--until", type=Moment(), help="Every run started before: 7d, or a date."),
        _db_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command()
@_hold_options
@click.option("--reason", default="", help="Why (a case number, say).")
@click.option("--list", "show", is_flag=True, help="List the runs under hold.")
@click.pass_context
def hold(ctx: click.Context, runs: tuple[str, ...], name: str | None, caller: str | None,
         statuses: tuple[str, ...], since: datetime | None, until: datetime | None,
         reason: str, show: bool, db: str | None) -> None:
    """Put runs under legal hold (by id, and/or by filter): purge and delete
    refuse them until `agentaudit release`."""
    _path(ctx, db)
    if show:
        for held in open_reader(ctx, db).holds():
            click.echo(f"{visible(held.run_id)}  since {held.held_at[:19]}  {visible(held.reason)}")
        return
    flt = _hold_filter(name, caller, statuses, since, until)
    if not runs and flt is None:
        raise click.UsageError("name runs, or give a filter (--name, --caller, --status, --since, --until)")
    store = open_writer(ctx, db)
    ids = store.hold([store.resolve_run_id(r) for r in runs], filter=flt, reason=reason)
    click.echo(f"{len(ids)} run{'' if len(ids) == 1 else 's'} under hold")


@click.command()
@_hold_options
@click.pass_context
def release(ctx: click.Context, runs: tuple[str, ...], name: str | None, caller: str | None,
            statuses: tuple[str, ...], since: datetime | None, until: datetime | None, db: str | None) -> None:
    """Lift the legal hold of runs (by id, and/or by filter)."""
    _path(ctx, db)
    flt = _hold_filter(name, caller, statuses, since, until)
    if not runs and flt is None:
        raise click.UsageError("name runs, or give a filter (--name, --caller, --status, --since, --until)")
    store = open_writer(ctx, db)
    ids = store.release(list(runs), filter=flt)
    click.echo(f"{len(ids)} run{'' if len(ids) == 1 else 's'} released")


@click.command()
@click.option("--floor", type=StaleAfter(), default=None,
              help="Refuse to purge or delete runs younger than this: 180d, 26w.")
@click.option("--no-floor", is_flag=True, help="Remove the retention floor.")
@_db_option
@click.pass_context
def retention(ctx: click.Context, floor: timedelta | None, no_floor: bool, db: str | None) -> None:
    """Show or set the retention floor kept in the database."""
    _path(ctx, db)
    if floor is not None and no_floor:
        raise click.UsageError("give --floor or --no-floor, not both")
    if floor is None and not no_floor:
        current = open_reader(ctx, db).retention_floor
        click.echo("no retention floor" if current is None else f"retention floor: {_days(current)}")
        return
    store = open_writer(ctx, db)
    store.set_retention_floor(None if no_floor else floor)
    click.echo("retention floor removed" if no_floor else f"retention floor: {_days(floor)}")


def _days(delta: timedelta | None) -> str:
    seconds = delta.total_seconds() if delta else 0
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds:g} s"


def register(cli: click.Group) -> None:
    """Add this module's commands to the ``agentaudit`` group."""
    for command in (signing_key, checkpoint, prove, hold, release, retention):
        cli.add_command(command)


# -- options of `verify` ------------------------------------------------------------------


def verify_options(fn: F) -> F:
    """``--checkpoints``, ``--public-key``, ``--proof`` and ``--bundle`` for `verify`."""
    options = [
        click.option("--checkpoints", "checkpoints_file", metavar="FILE",
                     help="Check every checkpointed run against this external checkpoint file."),
        click.option("--public-key", "public_key", envvar=PUBLIC_KEY_ENV, metavar="KEY", multiple=True,
                     help=f"The log's public key (text or a file; also ${PUBLIC_KEY_ENV}); "
                     "repeat across a key rotation."),
        click.option("--proof", "proof_file", metavar="FILE",
                     help="Check an inclusion proof from `agentaudit prove` (no database needed)."),
        click.option("--bundle", "bundle_file", metavar="FILE",
                     help="Check an offline bundle from `agentaudit export --bundle` (no database needed)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def verify_extras(
    ctx: click.Context,
    *,
    db: str | None,
    as_json: bool,
    run: str | None = None,
    all_runs: bool = False,
    checkpoints_file: str | None = None,
    public_key: tuple[str, ...] = (),
    proof_file: str | None = None,
    bundle_file: str | None = None,
    **_: Any,
) -> bool:
    """Handle `verify`'s checkpoint options; True when it did (the command then
    stops; exit status 1 when something does not hold)."""
    chosen = [o for o, v in (("--checkpoints", checkpoints_file), ("--proof", proof_file),
                             ("--bundle", bundle_file)) if v]
    if not chosen:
        if public_key and not os.environ.get(PUBLIC_KEY_ENV):
            raise click.UsageError("--public-key goes with --checkpoints, --proof or --bundle")
        return False
    if len(chosen) > 1 or run or all_runs:
        raise click.UsageError(f"{' '.join(chosen)} checks on its own: give no RUN, --all or other check")
    verifiers = _verifiers(public_key)
    if proof_file:
        _check_proof(ctx, proof_file, verifiers, as_json)
    elif bundle_file:
        _check_bundle(ctx, bundle_file, verifiers, as_json)
    else:
        _check_checkpoints(ctx, db, checkpoints_file or "", public_key, as_json)
    return True


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _check_proof(ctx: click.Context, path: str, verifiers: list[Verifier], as_json: bool) -> None:
    if not verifiers:
        raise click.UsageError("checking a proof needs --public-key (or the chain key in $AGENTAUDIT_KEY)")
    try:
        proven = verify_proof(_read(path, "proof"), verifiers)
    except CheckpointError as exc:
        if as_json:
            _print_json({"ok": False, "reason": str(exc)})
        else:
            click.echo(f"INVALID proof: {visible(str(exc))}")
        ctx.exit(1)
    entry = proven.entry
    if as_json:
        _print_json({"ok": True, "run_id": entry.run_id, "kind": entry.kind, "events": entry.events,
                     "seal": entry.seal, "digest": entry.digest, "checkpoint": proven.body.seq,
                     "tree_size": proven.body.size, "time": proven.body.time,
                     "signed_by": list(proven.signed_by)})
        return
    click.echo(
        f"ok: run {visible(entry.run_id)} ({entry.kind}, {entry.events} events, digest "
        f"{entry.digest[:16]}…) is entry {proven.index} of checkpoint {proven.body.seq} "
        f"({proven.body.time}), signed by {', '.join(proven.signed_by)}"
    )


def _check_bundle(ctx: click.Context, path: str, verifiers: list[Verifier], as_json: bool) -> None:
    from .._bundle import verify_bundle

    if not verifiers:
        raise click.UsageError("checking a bundle needs --public-key")
    report = verify_bundle(path, verifiers)
    if as_json:
        _print_json(report.to_json())
    else:
        for finding in report.findings:
            label = finding.kind.upper() if finding.problem else finding.kind
            click.echo(f"{label}: {visible(finding.detail)}")
        verdict = "ok" if report.ok else "FAILED"
        click.echo(f"{verdict}: bundle of {report.runs} runs, {report.events} events"
                   + (f", signed by {', '.join(report.signed_by)}" if report.signed_by else ""))
    if not report.ok:
        ctx.exit(1)


def _check_checkpoints(ctx: click.Context, db: str | None, path: str, public_key: tuple[str, ...],
                       as_json: bool) -> None:
    if not os.path.exists(path):
        raise CliError(f"no checkpoint file at {path}")
    _path(ctx, db)
    store = open_reader(ctx, db)
    report = store.verify_checkpoints(path, public_key=list(public_key), keys=_keyring())
    if as_json:
        _print_json(report.to_json())
    else:
        for finding in report.findings:
            label = finding.kind.upper() if finding.problem else finding.kind
            click.echo(f"{label}: {visible(finding.detail)}")
        verdict = "ok" if report.ok else "FAILED"
        click.echo(f"{verdict}: {report.checkpoints} checkpoints, {report.entries} entries, "
                   f"{report.runs} runs checked against {path}")
    if not report.ok:
        ctx.exit(1)


# -- options of `export` ------------------------------------------------------------------


def bundle_options(fn: F) -> F:
    """``--bundle FILE`` (with ``--signing-key`` and ``--sink``) for `export`."""
    options = [
        click.option("--bundle", "bundle", metavar="FILE",
                     help="Write a signed offline bundle (zip) of the runs, with proofs, instead."),
        _signing_key_option,
        _sink_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def export_bundle(ctx: click.Context, db: str | None, flt: RunFilter, *, bundle: str | None = None,
                  signing_key: str | None = None, sink: str | None = None, **_: Any) -> bool:
    """Handle `export --bundle`; True when it did. Makes a checkpoint first, so
    every selected run is covered."""
    if not bundle:
        return False
    if not signing_key:
        raise click.UsageError(f"a bundle is signed: give --signing-key FILE (or ${SIGNING_KEY_ENV})")
    store = _checkpointing_store(ctx, db, signing_key, sink)
    store.checkpoint()
    values = {f.name: getattr(flt, f.name) for f in dataclasses.fields(flt)}
    selection = {k: str(v) for k, v in values.items() if v not in (None, (), "", False, 0)}
    summary = store.export_bundle(bundle, flt, selection=selection)
    click.echo(f"bundled {summary['runs']} runs ({summary['bytes']:,} bytes) into {bundle}", err=True)
    if summary["left_out"]:
        click.echo(f"{len(summary['left_out'])} runs left out: in no checkpoint", err=True)
    return True
