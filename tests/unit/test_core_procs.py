"""``core.procs.Proc``: its own process group (stopped with everything it spawned), SIGTERM when the
thread that started it ends, and no Python run between fork and exec (no ``preexec_fn``)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from selfimprove.core.procs import Proc, ProcessError

pytestmark = pytest.mark.unit


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (exited, or a zombie nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_proc_runs_in_its_own_group_and_stop_kills_the_group(tmp_path, monkeypatch):
    seen = {}
    real_popen = subprocess.Popen

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    log = tmp_path / "sh.log"
    proc = Proc("sh", ["/bin/sh", "-c", "sleep 60 & echo child $!; wait"], log)
    proc.start()
    assert "preexec_fn" not in seen and seen["start_new_session"] is True
    assert proc.pid is not None and os.getpgid(proc.pid) == proc.pid
    assert wait_for(lambda: "child " in log.read_text())
    child = int(log.read_text().split("child ")[1].split()[0])
    assert os.getpgid(child) == proc.pid
    leader = proc.pid
    proc.stop(timeout=5)
    assert wait_for(lambda: gone(leader) and gone(child))


@pytest.mark.parametrize("until_exec", [True, False], ids=["thread-outlives-exec", "thread-ends-at-once"])
def test_proc_gets_sigterm_when_the_thread_that_started_it_ends(tmp_path, until_exec):
    proc = Proc("sleep", ["/bin/sleep", "60"], tmp_path / "sleep.log")

    def start() -> None:
        proc.start()
        if until_exec:  # the launcher has set the parent-death signal and run the program
            assert proc.pid is not None
            assert wait_for(lambda: Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"/bin/sleep"))

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    assert proc.popen is not None
    try:
        assert proc.popen.wait(timeout=10) == -signal.SIGTERM
    finally:
        proc.stop(timeout=1)


def test_proc_finds_programs_on_the_path_and_names_a_missing_one(tmp_path):
    proc = Proc("echo", ["echo", "hello"], tmp_path / "echo.log")
    proc.start()
    assert proc.popen is not None and proc.popen.wait(timeout=10) == 0
    assert proc.tail() == "hello"
    with pytest.raises(ProcessError, match="missing: cannot run /nonexistent/bin"):
        Proc("missing", ["/nonexistent/bin"], tmp_path / "missing.log").start()


def test_a_stack_folder_is_held_by_one_stack_at_a_time(tmp_path: Path) -> None:
    from selfimprove.core.stack import StackError, lock_root

    held = lock_root(tmp_path)
    assert (tmp_path / "stack.lock").read_text() == str(os.getpid())
    with pytest.raises(
        StackError, match=rf"{tmp_path} is in use by another local stack \(pid {os.getpid()}\)"
    ):
        lock_root(tmp_path)
    held.close()
    lock_root(tmp_path).close()  # free again once the holder lets go


def test_a_local_loop_runs_replicas_of_a_service_splitting_its_threads(tmp_path: Path) -> None:
    from selfimprove.core.local_loop import LocalLoop
    from selfimprove.core.stack import LocalStack

    loop = LocalLoop(LocalStack(root=tmp_path), threads=2, replicas={"acquisition": 2})
    assert loop.names.count("acquisition") == 1 and "acquisition-2" in loop.names
    assert len(loop.names) == len(loop.services) + 1
    loop.ports = dict.fromkeys(loop.names, 1)
    env = loop.service_env("acquisition-2")
    assert (env["SELFIMPROVE_THREADS"], env["OMP_NUM_THREADS"]) == ("1", "1")
    assert env["SELFIMPROVE_INSTANCE"] == "acquisition-2-local"
    assert loop.service_env("trainer")["SELFIMPROVE_THREADS"] == "2"
    assert loop.service_of("evaluator-worker") == "evaluator-worker"
    assert (
        LocalLoop(LocalStack(root=tmp_path), threads=1, replicas={"acquisition": 2}).threads_of("acquisition")
        == 1
    )
