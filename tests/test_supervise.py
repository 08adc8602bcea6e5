"""Supervised processes (pid + create time: a reused pid is never signalled) and `wait_until`."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from jobs.supervise import (ProcessExited, WaitTimeout, free_port, kept_ports, pid_alive, port_open, read_json,
                            read_pid, start_process, stop_process, wait_until, write_json)
from udfs.errors import PhotoscoreError

# A child that ignores SIGTERM, as SeaweedFS does: only SIGKILL ends it.
IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


@pytest.fixture
def sleeper(tmp_path):
    """A supervised `sleep 60` with its pid file and log; stopped at the end whatever happened."""
    pid_path, log_path = tmp_path / "sleep.pid", tmp_path / "sleep.log"
    pid = start_process(["sleep", "60"], log_path, pid_path)
    yield pid, pid_path, log_path
    stop_process(pid_path, grace_s=1)


# ---------------------------------------------------------------- supervision

def test_a_started_process_is_recorded_with_its_create_time_and_runs(sleeper):
    pid, pid_path, log_path = sleeper
    first, created = pid_path.read_text().split()
    assert int(first) == pid and float(created) == pytest.approx(psutil.Process(pid).create_time(), abs=0.01)
    assert read_pid(pid_path) == pid and pid_alive(pid)
    assert "start: sleep 60" in log_path.read_text()
    assert os.getpgid(pid) == pid  # its own session: stop signals its whole process group


def test_stop_ends_the_process_and_removes_the_pid_file(sleeper):
    pid, pid_path, _ = sleeper
    assert stop_process(pid_path, grace_s=5)
    assert not pid_alive(pid) and not pid_path.exists() and read_pid(pid_path) is None
    assert not stop_process(pid_path)  # nothing left to stop


def test_stop_signals_the_whole_process_group(tmp_path):
    pid_path = tmp_path / "sh.pid"
    # A shell whose child sleeps in the same session; the shell waits for it.
    start_process(["sh", "-c", "sleep 60 & echo $! > child; wait"], tmp_path / "sh.log", pid_path, cwd=tmp_path)
    child = wait_until(lambda: (tmp_path / "child").is_file() and (tmp_path / "child").read_text().strip(), 10,
                       0.05, what="the shell to start its child")
    assert stop_process(pid_path, grace_s=5)
    wait_until(lambda: not pid_alive(int(child)), 5, 0.05, what="the child to end with its group")


def test_stop_escalates_to_sigkill_for_a_process_that_ignores_sigterm(tmp_path):
    pid_path, log_path = tmp_path / "stubborn.pid", tmp_path / "stubborn.log"
    pid = start_process([sys.executable, "-c", IGNORES_SIGTERM], log_path, pid_path)
    wait_until(lambda: "ready" in log_path.read_text(), 30, 0.05, what="the handler to be installed", watch=pid)
    t0 = time.monotonic()
    assert stop_process(pid_path, grace_s=0.5)
    assert not pid_alive(pid) and time.monotonic() - t0 < 5


def test_a_reused_pid_is_never_signalled_and_reads_as_not_running(tmp_path):
    # This very process stands in for whoever got the pid since: same pid, another create time.
    me = psutil.Process(os.getpid())
    pid_path = tmp_path / "stale.pid"
    pid_path.write_text(f"{me.pid}\n{me.create_time() - 3600!r}\n")
    assert read_pid(pid_path) is None
    assert not stop_process(pid_path, grace_s=0.1)  # had it signalled us, this test would be dead
    assert not pid_path.exists()


def test_a_bare_pid_file_is_trusted_only_for_a_process_older_than_the_file(tmp_path, sleeper):
    # Pid files written before create times were recorded hold the pid alone.
    pid, _, _ = sleeper
    legacy = tmp_path / "legacy.pid"
    legacy.write_text(f"{pid}\n")
    assert read_pid(legacy) == pid  # the process predates the file: the one the file names
    old = time.time() - 3600
    os.utime(legacy, (old, old))  # the file predates the process: its pid was reused since
    assert read_pid(legacy) is None and not stop_process(legacy) and pid_alive(pid)


def test_missing_garbled_and_ended_pid_files_read_as_not_running(tmp_path):
    assert read_pid(tmp_path / "missing.pid") is None
    (tmp_path / "garbled.pid").write_text("not a pid\n")
    assert read_pid(tmp_path / "garbled.pid") is None
    pid_path = tmp_path / "done.pid"
    pid = start_process(["true"], tmp_path / "done.log", pid_path)
    wait_until(lambda: not pid_alive(pid), 10, 0.05, what="`true` to end")  # reaps our zombie child
    assert read_pid(pid_path) is None and not stop_process(pid_path)
    assert not pid_alive(None) and not pid_alive(0)


def test_ports():
    port = free_port()
    assert not port_open("127.0.0.1", port)


def test_kept_ports_are_chosen_once_and_kept_a_taken_one_is_replaced_while_stopped_and_a_fixed_one_wins(tmp_path):
    import socket

    path = tmp_path / "ports.json"
    first = kept_ports(path, ("a", "b"), running=False)
    assert kept_ports(path, ("a", "b"), running=False) == first == read_json(path)
    with socket.socket() as taken:  # someone else listens on `a` while the service is down
        taken.bind(("127.0.0.1", first["a"]))
        taken.listen()
        assert kept_ports(path, ("a", "b"), running=True) == first  # running: the listener is the service
        again = kept_ports(path, ("a", "b"), running=False)
        assert again["a"] != first["a"] and again["b"] == first["b"]
    assert kept_ports(path, ("a", "b"), running=False, fixed={"a": first["a"], "b": 0}) == {**again, "a": first["a"]}


def test_write_json_replaces_the_file_with_the_mode_asked(tmp_path):
    path = tmp_path / "secret.json"
    write_json(path, {"k": 1}, mode=0o600)
    assert read_json(path) == {"k": 1} and (path.stat().st_mode & 0o777) == 0o600
    assert not list(tmp_path.glob("*.tmp"))
    path.write_text("{garbled")
    assert read_json(path) is None and read_json(tmp_path / "missing.json") is None


# ---------------------------------------------------------------- wait_until

def test_wait_until_returns_the_first_truthy_value():
    calls = []

    def third_time() -> str | None:
        calls.append(1)
        return "ready" if len(calls) >= 3 else None

    polls = []
    assert wait_until(third_time, 5, 0.01, what="the third call", on_poll=lambda: polls.append(1)) == "ready"
    assert len(calls) == 3 == len(polls)


def test_wait_until_times_out_naming_what_it_waited_for():
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0.3 s waiting for the moon; see the.log") as info:
        wait_until(lambda: False, 0.3, 0.05, what="the moon", hint="see the.log")
    assert 0.3 <= time.monotonic() - t0 < 2
    assert isinstance(info.value, PhotoscoreError) and isinstance(info.value, TimeoutError)


def test_wait_until_checks_at_least_once_even_without_time():
    assert wait_until(lambda: 7, 0, what="nothing")


def test_wait_until_fails_fast_when_the_watched_process_dies(tmp_path):
    pid = start_process(["sh", "-c", "sleep 0.2"], tmp_path / "short.log", tmp_path / "short.pid")
    t0 = time.monotonic()
    with pytest.raises(ProcessExited, match=rf"process {pid} exited while waiting for a port; see short.log"):
        wait_until(lambda: False, 30, 0.05, what="a port", watch=pid, hint="see short.log")
    assert time.monotonic() - t0 < 10


def test_wait_until_watches_a_popen_without_stealing_its_exit_code():
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    with pytest.raises(ProcessExited):
        wait_until(lambda: False, 30, 0.05, what="nothing", watch=proc)
    assert proc.wait() == 3


def test_wait_until_refuses_to_watch_a_pid_that_is_already_gone(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(ProcessExited):
        wait_until(lambda: True, 1, what="anything", watch=proc.pid)


def test_an_on_poll_error_stops_the_wait():
    def give_up():
        raise PhotoscoreError("the job failed")

    with pytest.raises(PhotoscoreError, match="the job failed"):
        wait_until(lambda: False, 30, what="anything", on_poll=give_up)

