"""The Auditor and its run() context manager; current_run through threads and tasks."""

import asyncio
import contextvars
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import agentaudit as aa


@pytest.fixture
def store():
    return aa.MemoryStore()


def test_start_run_records_the_run(store):
    w = aa.Auditor(store).start_run(
        "research-agent", caller="user:42", input="question", metadata={"env": "prod"}, run_id="r-1"
    )
    run = store.get_run("r-1")
    assert w.run_id == "r-1"
    assert (run.name, run.caller, run.input, run.metadata, run.status) == (
        "research-agent", "user:42", "question", {"env": "prod"}, aa.RunStatus.RUNNING
    )
    assert run.pid == os.getpid() and run.host == socket.gethostname()
    assert run.parent_run_id is None


def test_generated_run_ids_are_unique(store):
    auditor = aa.Auditor(store)
    assert len({auditor.start_run("a").run_id for _ in range(100)}) == 100


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_bad_run_name_is_a_value_error(store, name):
    with pytest.raises(ValueError, match="run name"):
        aa.Auditor(store).start_run(name)


def test_bad_auditor_options_are_value_errors(store):
    with pytest.raises(ValueError, match="finish_timeout"):
        aa.Auditor(store, finish_timeout=0)
    with pytest.raises(ValueError, match="pricing"):
        aa.Auditor(store, pricing=3)


def test_input_is_capped_and_serialized(store):
    w = aa.Auditor(store).start_run("a", input={"q": "x" * 10_000})
    assert store.get_run(w.run_id).input.endswith("bytes]")


def test_run_succeeds(store):
    with aa.Auditor(store).run("a") as w:
        w.set_output({"answer": 42})
    run = store.get_run(w.run_id)
    assert run.status is aa.RunStatus.SUCCEEDED and run.output == '{"answer":42}'


def test_run_fails_with_error_text_and_reraises(store):
    with pytest.raises(ValueError), aa.Auditor(store).run("a") as w:
        raise ValueError("bad input")
    run = store.get_run(w.run_id)
    assert run.status is aa.RunStatus.FAILED and run.error == "ValueError: bad input"


def test_keyboard_interrupt_cancels(store):
    with pytest.raises(KeyboardInterrupt), aa.Auditor(store).run("a") as w:
        raise KeyboardInterrupt
    assert store.get_run(w.run_id).status is aa.RunStatus.CANCELLED


def test_timeout_error_is_timeout(store):
    with pytest.raises(TimeoutError), aa.Auditor(store).run("a") as w:
        raise TimeoutError("too slow")
    assert store.get_run(w.run_id).status is aa.RunStatus.TIMEOUT


async def test_async_run_succeeds_and_fails(store):
    auditor = aa.Auditor(store)
    async with auditor.run("ok") as w:
        await asyncio.sleep(0)
    assert store.get_run(w.run_id).status is aa.RunStatus.SUCCEEDED
    with pytest.raises(RuntimeError):
        async with auditor.run("bad") as w2:
            raise RuntimeError("x")
    assert store.get_run(w2.run_id).status is aa.RunStatus.FAILED


async def test_a_cancelled_task_lands_as_cancelled(store):
    auditor = aa.Auditor(store)
    started = asyncio.Event()
    seen = {}

    async def agent():
        async with auditor.run("slow") as w:
            seen["id"] = w.run_id
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(agent())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.get_run(seen["id"]).status is aa.RunStatus.CANCELLED


async def test_close_works_inside_an_already_cancelled_task(store):
    w = aa.Auditor(store).start_run("a")

    async def body():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            w.close(aa.RunStats(status="cancelled"))
            raise

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.get_run(w.run_id).status is aa.RunStatus.CANCELLED


def test_current_run_and_child_runs(store):
    auditor = aa.Auditor(store)
    assert not aa.current_run().enabled
    with auditor.run("parent") as parent:
        assert aa.current_run() is parent
        with auditor.run("child") as child:
            assert aa.current_run() is child
        root = auditor.start_run("explicit-root", parent_run_id=None)
        root.close()
        assert aa.current_run() is parent
    assert not aa.current_run().enabled
    assert store.get_run(child.run_id).parent_run_id == parent.run_id
    assert store.get_run(root.run_id).parent_run_id is None


def test_current_run_reaches_executor_threads_through_copy_context(store):
    auditor = aa.Auditor(store)
    with auditor.run("parent") as parent, ThreadPoolExecutor(2) as pool:
        plain = pool.submit(lambda: aa.current_run()).result()
        ctx = contextvars.copy_context()
        copied = pool.submit(ctx.run, aa.current_run).result()
    assert not plain.enabled
    assert copied is parent


async def test_current_run_follows_asyncio_tasks_and_to_thread(store):
    auditor = aa.Auditor(store)
    async def read():
        await asyncio.sleep(0)
        return aa.current_run()

    async with auditor.run("parent") as parent:
        in_task = await asyncio.create_task(read())
        in_thread = await asyncio.to_thread(aa.current_run)
    assert in_task is parent and in_thread is parent


def test_one_auditor_serves_concurrent_runs_across_threads(store):
    auditor = aa.Auditor(store)

    def agent(i):
        with auditor.run(f"agent-{i}") as w:
            for step in range(1, 6):
                w.on_step(step, aa.Response(text=f"{i}:{step}", usage=aa.Usage(i, step)))
        return w.run_id

    threads_ids = []
    threads = [threading.Thread(target=lambda i=i: threads_ids.append(agent(i))) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for run_id in threads_ids:
        run = store.get_run(run_id)
        i = int(run.name.split("-")[1])
        texts = [e.payload["text"] for e in store.get_logs(run_id, event_types=["step"])]
        assert texts == [f"{i}:{s}" for s in range(1, 6)]
        assert run.input_tokens == 5 * i and store.verify(run_id).ok


def test_faults_are_logged_once_per_kind_per_run(caplog):
    from agentaudit.testing import RaisingStore

    auditor = aa.Auditor(RaisingStore(methods={"append_log"}))
    with caplog.at_level("WARNING", logger="agentaudit"):
        w = auditor.start_run("a")
        for _ in range(5):
            w.log_event("x", {})
    logged = [r for r in caplog.records if "append_log" in r.getMessage()]
    assert len(logged) == 1 and auditor.faults.counts()["append_log"] == 5
