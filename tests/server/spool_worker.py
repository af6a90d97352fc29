"""A worker process for the spool tests: records runs through a spooled server store.

Each run whose ``close`` returned with no fault counted is appended to the ledger
(one JSON line, fsynced): the run id and how many events it was acknowledged for.
``--hold`` then starts one more run, records a few events, writes ``{"held": id}``
and waits to be killed (or, with ``--hold-until FILE``, finishes it once FILE
exists). At the end the worker closes the store (which drains for ``--drain``
seconds) and prints the backlog left as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import agentaudit as aa
from agentaudit.stores._forwarder import read_backlog, target_key
from agentaudit.stores._sqlite_schema import connect


def _ack(ledger: Path, record: dict[str, object]) -> None:
    with open(ledger, "a") as out:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--ledger", required=True, type=Path)
    parser.add_argument("--name", default="work")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between events")
    parser.add_argument("--lease-ttl", type=float, default=30.0)
    parser.add_argument("--drain", type=float, default=5.0)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--hold-until", type=Path, default=None)
    parser.add_argument("--hold-more", type=Path, default=None)
    parser.add_argument("--no-close", action="store_true", help="exit without closing the store")
    args = parser.parse_args()
    # The forwarder's log, in a file beside the ledger (a failing test shows it). Not
    # stderr: tests read that pipe only at the end, and a full pipe would block
    # whichever thread logs next, the forwarder's included.
    logging.basicConfig(level=logging.INFO, filename=f"{args.ledger}.log",
                        format="%(asctime)s %(threadName)s %(message)s")

    store = aa.open_store(args.db, spool=args.spool, lease_ttl=args.lease_ttl, drain_timeout=args.drain)
    auditor = aa.Auditor(store)
    for i in range(args.runs):
        before = auditor.faults.total
        writer = auditor.start_run(f"{args.name}-{i}", caller=args.name, input=f"task {i}")
        for k in range(args.events):
            writer.log_event("tick", {"k": k, "worker": args.name})
            if args.pace:
                time.sleep(args.pace)
        writer.close("succeeded")
        if auditor.faults.total == before:
            _ack(args.ledger, {"run_id": writer.run_id, "events": writer.events_count})
    if args.hold:
        writer = auditor.start_run(f"{args.name}-held", caller=args.name)
        for k in range(3):
            writer.log_event("tick", {"k": k, "worker": args.name})
        store.flush()
        _ack(args.ledger, {"held": writer.run_id, "pid": os.getpid()})
        if args.hold_more is not None:  # two more events, then wait to be killed
            while not args.hold_more.exists():
                time.sleep(0.05)
            for k in (3, 4):
                writer.log_event("tick", {"k": k, "worker": args.name, "spooled": True})
            store.flush()
            _ack(args.ledger, {"more": 2})
        if args.hold_until is None:
            while True:
                time.sleep(3600)
        while not args.hold_until.exists():
            time.sleep(0.05)
        writer.log_event("tick", {"k": 3, "worker": args.name, "late": True})
        writer.close("succeeded")
        _ack(args.ledger, {"run_id": writer.run_id, "events": writer.events_count, "late": True})
    if args.no_close:
        return  # the exit hook drains the spool
    store.close()
    conn = connect(args.spool, synchronous="NORMAL")  # the store is closed: read its file
    backlog = read_backlog(conn, target_key(args.db))
    conn.close()
    print(json.dumps({"runs": backlog.runs, "events": backlog.events}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
