"""A worker process for tests/server/test_server_processes.py (run as a script).

``server_worker.py migrate URL GATE``: wait for the file GATE, then open the store
(which migrates an empty database) and close it.
``server_worker.py write URL GATE N``: wait for GATE, record N runs of a few events
each, close, and print their ids as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

import agentaudit as aa


def wait_for(gate: str) -> None:
    open(f"{gate}.{os.getpid()}.ready", "w").close()
    while not os.path.exists(gate):
        time.sleep(0.005)


def main() -> None:
    mode, url, gate = sys.argv[1:4]
    wait_for(gate)
    store = aa.open_store(url)
    ids = []
    if mode == "write":
        auditor = aa.Auditor(store, strict=True)
        for i in range(int(sys.argv[4])):
            with auditor.run("worker", caller=f"pid:{os.getpid()}", input=f"task {i}") as writer:
                for step in range(1, 4):
                    writer.on_step(step, aa.Response(text=f"step {step}", model="openai/gpt-4o-mini",
                                                     usage=aa.Usage(input_tokens=step, output_tokens=1)))
                    writer.log_event("custom", {"i": i, "step": step})
            ids.append(writer.run_id)
    store.close()
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
