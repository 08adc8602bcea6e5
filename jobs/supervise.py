"""Supervised local processes (a pid file and a log each), loopback ports, and `wait_until`.

A supervised process is started detached in its own session by `start_process`, which writes its
pid file: the pid on the first line (so `kill $(head -1 FILE)` works) and the process' create time
(`psutil.Process(pid).create_time()`) on the second. Everything that reads a pid file
(`read_pid`, `stop_process`) checks that the pid still belongs to the process that was started -
same create time - so a pid the OS has since given to another process is never signalled and reads
as not running.

A pid file written before create times were recorded holds the pid alone. It is trusted when the
process with that pid was created no later than the file was written (a process started by
`start_process` is created just before its pid file): a pid reused afterwards was created later,
so it is refused too. Only a pid file rewritten (or touched) after the fact could mislead this.

`wait_until(predicate, timeout_s, ...)` is the one polling loop for everything that waits for
something to come up or finish (a port, a broker, a job's records, a process' end); see its
docstring.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import psutil

from udfs.errors import PhotoscoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Two readings of one process' create time can differ by a second or a little more: psutil derives
# it from the boot time, which the kernel reports in whole seconds and re-derives after a clock step
# (seen here: a 1 s shift mid-run made a live job read as gone). A pid is reused only after the
# kernel's pid space wraps, which takes far longer than a few seconds.
CREATE_TIME_TOLERANCE_S = 5.0


class WaitTimeout(PhotoscoreError, TimeoutError):
    """`wait_until` ran out of time; the message names what was awaited."""


class ProcessExited(PhotoscoreError):
    """The process `wait_until` watched ended before what was awaited happened."""


# ---------------------------------------------------------------- waiting

def wait_until(predicate: Callable[[], T], timeout_s: float, interval_s: float = 0.2, *, what: str,
               watch: int | subprocess.Popen | None = None, on_poll: Callable[[], object] | None = None,
               hint: str = "") -> T:
    """Call `predicate` every `interval_s` until it returns something truthy, and return that.

    - `what` names what is awaited, for the errors: "the broker at HOST:PORT to answer".
    - `timeout_s`: after that long, raise `WaitTimeout` ("timed out after 60 s waiting for <what>").
      The predicate is always called at least once, and once more at the deadline.
    - `watch`: a pid or a `subprocess.Popen` whose end makes the wait pointless: checked before
      each call, it raises `ProcessExited` at once instead of waiting out the timeout.
    - `on_poll`: called before each check (e.g. to report progress); it may raise to stop waiting.
    - `hint` is appended to both errors, e.g. "see /path/to/the.log".

    Both errors are PhotoscoreErrors (the CLI prints them without a traceback); `WaitTimeout` is also
    a TimeoutError. A caller for whom running out of time is an answer, not a failure, catches it.

    A loop, not tenacity: tenacity retries a call that raises, this polls a condition and watches a
    process, and it must run in the Flink environment too, which has no tenacity.
    """
    watched = _watched(watch)
    suffix = f"; {hint}" if hint else ""
    deadline = time.monotonic() + timeout_s
    while True:
        if on_poll is not None:
            on_poll()
        if watched is not None and not watched():
            raise ProcessExited(f"process {_pid_of(watch)} exited while waiting for {what}{suffix}")
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}{suffix}")
        time.sleep(min(interval_s, remaining))


def _pid_of(watch: int | subprocess.Popen) -> int:
    return watch.pid if isinstance(watch, subprocess.Popen) else watch


def _watched(watch: int | subprocess.Popen | None) -> Callable[[], bool] | None:
    """A 'still running?' check for `watch`, bound to the process running now (not a later owner
    of its pid)."""
    if watch is None:
        return None
    if isinstance(watch, subprocess.Popen):
        return lambda: watch.poll() is None  # Popen reaps its own child and keeps the exit code
    try:
        proc = psutil.Process(watch)
    except psutil.NoSuchProcess:
        return lambda: False
    return lambda: not _ended(proc)


# ---------------------------------------------------------------- processes

def start_process(argv: Sequence[str | Path], log_path: Path, pid_path: Path,
                  env: dict | None = None, cwd: Path | None = None) -> int:
    """Start `argv` detached in its own session (so `stop_process` can signal its whole process
    group), stdout+stderr appended to `log_path`; write the pid file; return the pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(map(str, argv))}\n".encode())
        out.flush()
        proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
    # Our child stays in /proc (a zombie at worst) until we wait for it: its create time is there.
    created = psutil.Process(proc.pid).create_time()
    pid_path.write_text(f"{proc.pid}\n{created!r}\n")
    return proc.pid


def read_pid(pid_path: Path) -> int | None:
    """The pid of the running process `pid_path` records, or None: no file, a garbled one, a process
    that ended, or a pid that now belongs to another process (see the module docstring)."""
    proc = _recorded_process(pid_path)
    return proc.pid if proc is not None else None


def pid_alive(pid: int | None) -> bool:
    """True when some process runs (not a zombie) under `pid`. A bare pid cannot tell its process
    from a later owner: for a supervised process, ask `read_pid(pid_file)` instead."""
    if not pid:
        return False
    try:
        return not _ended(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def stop_process(pid_path: Path, grace_s: float = 10.0) -> bool:
    """Stop the process `pid_path` records and remove the file; True when a running one was stopped.

    SIGTERM to its process group (the session `start_process` created: the process and its
    children), SIGKILL to the group after `grace_s` if the process is still there (SeaweedFS, for
    one, ignores SIGTERM). A pid that no longer belongs to the recorded process is left alone.
    """
    proc = _recorded_process(pid_path)
    if proc is not None:
        _signal_group(proc, signal.SIGTERM)
        try:
            wait_until(lambda: _ended(proc), grace_s, 0.1, what=f"pid {proc.pid} to end after SIGTERM")
        except WaitTimeout:
            log.warning("pid %s did not stop after SIGTERM in %.0f s; sending SIGKILL", proc.pid, grace_s)
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(WaitTimeout):
                wait_until(lambda: _ended(proc), 5.0, 0.05, what=f"pid {proc.pid} to end after SIGKILL")
    pid_path.unlink(missing_ok=True)
    return proc is not None


def _read_record(pid_path: Path) -> tuple[int, float | None] | None:
    """(pid, create time or None for a bare-pid file) from a pid file; None when missing or garbled."""
    try:
        fields = pid_path.read_text().split()
        return int(fields[0]), (float(fields[1]) if len(fields) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None


def _recorded_process(pid_path: Path) -> psutil.Process | None:
    """The running process the pid file names, if its pid still belongs to it."""
    record = _read_record(pid_path)
    if record is None:
        return None
    pid, created = record
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
        if created is None:  # a bare pid: the process must predate the file
            same = started <= pid_path.stat().st_mtime + CREATE_TIME_TOLERANCE_S
        else:
            same = abs(started - created) <= CREATE_TIME_TOLERANCE_S
    except (psutil.NoSuchProcess, OSError):
        return None
    return proc if same and not _ended(proc) else None


def _ended(proc: psutil.Process) -> bool:
    """True when `proc` is gone, a zombie (reaped here if it is our child), or its pid was reused."""
    try:
        if not proc.is_running():  # gone, or its pid belongs to another process now
            return True
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    with contextlib.suppress(ChildProcessError):  # processes we started stay zombies until waited for
        os.waitpid(proc.pid, os.WNOHANG)
    return True


def _signal_group(proc: psutil.Process, sig: int) -> None:
    """Signal the process group `proc` leads (pgid == pid for a session leader), else `proc` alone."""
    try:
        if os.getpgid(proc.pid) == proc.pid and proc.is_running():
            os.killpg(proc.pid, sig)
            return
    except (ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)  # psutil refuses if the pid was reused meanwhile


# ---------------------------------------------------------------- state files and ports

def read_json(path: Path) -> dict | None:
    """A supervised service's state file (JSON), or None when missing or garbled."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict, mode: int | None = None) -> None:
    """Replace a state file atomically (readers never see half of it), with permissions `mode` if
    given (set before the rename: a secret is never readable by others)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


def kept_ports(path: Path, names: Sequence[str], running: bool, fixed: dict[str, int] | None = None) -> dict[str, int]:
    """A service's loopback ports, chosen once and kept in `path` so clients and a restart find it
    again. A name without a port gets a free one, and so does one whose port someone else took
    while the service was not `running`; a non-zero `fixed` port wins."""
    ports = read_json(path) or {}
    changed = False
    for name in names:
        port = (fixed or {}).get(name)
        if not port and (name not in ports or (not running and port_open("127.0.0.1", ports[name]))):
            port = free_port()
        if port and ports.get(name) != port:
            ports[name], changed = port, True
    if changed:
        write_json(path, ports)
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """True when GET `url` answers 200 (a health endpoint); False on any error or other status."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
