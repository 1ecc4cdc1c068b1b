"""The grading worker: the process where a student's code runs, away from everything that decides the grade.

    python -I gloss_lite/course/worker.py serve FD PACKAGE_DIR      (started by gloss_lite.course.workers)

``serve`` is a *zygote*: it imports torch once, never imports this package, never receives a
seed, an expected value or another submission, and forks one worker per exercise on request
(``fork``), sweeping up after it (``end``). A worker:

1. starts a session of its own (so its process group can be ended as a whole), keeps only its
   channel to the grader and a stderr file, moves into an empty scratch folder, and sets its
   limits (address space, CPU seconds, file size);
2. receives its job and loads the exercise's *face* of the package: only the method modules the
   exercise lists (``Exercise.face``), and the modules they import, under a package ``gloss_lite``
   of its own whose search path is then emptied, so no other module of the package (the course,
   its references, training, ...) can be imported, by any name or route;
3. locks itself in: an import hook refuses the rest of the package and the exercise's withheld
   libraries; Python's audit hooks (which code cannot remove) refuse opening any file but
   Python's own and the scratch folder's, starting processes, sockets, signals to other
   processes and new C libraries; on Linux 5.13+ Landlock makes the kernel enforce the same
   file rules (native code included), forbids executing any file and sending signals out;
4. runs the notebook's imports and solution cells, then answers the grader's calls
   (``gloss_lite.course.calls``): it calls the student's function on the inputs it is sent and
   sends back plain data. It never sees what the results are compared with.

Steps 2 and 3 are ``gloss_lite.course.confinement``. Messages are JSON, each preceded by its
length (``send``, ``receive``). This module imports nothing of the package: it loads
``calls.py`` and ``confinement.py`` from its own folder.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.abc
import importlib.util
import json
import os
import resource
import signal
import socket
import struct
import sys
import time
import types
from pathlib import Path

HEADER = struct.Struct("!Q")
MAX_MESSAGE = 64 * 2**20  # bytes in one message; a larger reply is refused unread
FILE_SIZE_LIMIT = 64 * 2**20  # bytes a worker may write to one file (its stderr included)


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

class ChannelClosed(EOFError):
    """The other end closed the channel (or sent what is not a message)."""


def send(channel: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode("utf-8")
    channel.sendall(HEADER.pack(len(data)) + data)


def _read_exactly(channel: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, left = [], size
    while left:
        if deadline is not None:
            channel.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = channel.recv(min(left, 2**20))
        if not chunk:
            raise ChannelClosed("the channel closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(channel: socket.socket, *, deadline: float | None = None, limit: int = MAX_MESSAGE) -> dict:
    """The next message; ``TimeoutError`` at ``deadline`` (``time.monotonic()``), ``ChannelClosed`` at
    the end of the channel or on a message that is too long or not a JSON object."""
    (size,) = HEADER.unpack(_read_exactly(channel, HEADER.size, deadline))
    if size > limit:
        raise ChannelClosed(f"a message of {size} bytes (the limit is {limit})")
    try:
        message = json.loads(_read_exactly(channel, size, deadline))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ChannelClosed("a message that is not JSON") from None
    if not isinstance(message, dict):
        raise ChannelClosed("a message that is not a JSON object")
    return message


# ---------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------

class Unavailable:
    """What a notebook import that failed in the worker binds its name to: using it says why."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def __getattr__(self, name):
        raise ImportError(self._reason)

    def __call__(self, *args, **kwargs):
        raise ImportError(self._reason)


def _error_text(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:
        text = "(its message could not be read)"
    return f"{type(error).__name__}: {text[:2000]}"


def run_cells(job: dict, namespace: dict) -> str | None:
    """The notebook's imports, then every solution cell; what went wrong in this exercise's cell, or None."""
    for statement in job["imports"]:
        try:
            exec(compile(statement, "<notebook imports>", "exec"), namespace)
        except BaseException as error:
            for name in job["import_names"].get(statement, []):
                namespace[name] = Unavailable(f"{statement!r} failed while grading ({_error_text(error)})")
    problem = None
    for exercise_id, source in job["cells"]:
        try:
            exec(compile(source, f"<solution {exercise_id}>", "exec"), namespace)
        except BaseException as error:  # SyntaxError, NameError, SystemExit, ...: its own exercise only
            if exercise_id == job["exercise"]:
                problem = f"the solution cell raised {_error_text(error)}"
    return problem


def answer_calls(channel: socket.socket, function, calls) -> None:
    """Serve ``{"call": name, "args": data}`` requests until the channel closes."""
    while True:
        request = receive(channel)
        try:
            args = calls.decode(request.get("args"))
            value = calls.CALLS[request["call"]](function, *args)
            reply = {"value": calls.encode(value)}
        except NotImplementedError as error:
            reply = {"not_implemented": _error_text(error).partition(": ")[2]}
        except BaseException as error:
            reply = {"raised": _error_text(error)}
        send(channel, reply)


def work(channel: socket.socket, package_dir: str, scratch: str, siblings) -> None:
    job = receive(channel)
    kernel = siblings.confinement.lock_in(job, package_dir, scratch)
    send(channel, {"ready": True, "landlock": kernel})
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    problem = run_cells(job, namespace)
    function = namespace.get(job["function"])
    if problem is not None:
        send(channel, {"cell_failed": problem})
    elif not callable(function):
        send(channel, {"missing": f"the solution cell does not define {job['function']}(...)"})
    else:
        send(channel, {"defined": True})
        answer_calls(channel, function, siblings.calls)


def set_limits(memory_mb: int | None, cpu_seconds: int) -> None:
    for limit, value in ((resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    if memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))


def start_worker(fds: list[int], request: dict, package_dir: str, siblings) -> None:
    """In the forked child: step 1 of the module's docstring, then ``work``; never returns."""
    code = 0
    try:
        os.setsid()
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file past the size limit fails to grow instead
        channel_fd, stderr_fd = fds
        quiet = os.open(os.devnull, os.O_RDWR)
        os.dup2(quiet, 0)
        os.dup2(quiet, 1)
        os.dup2(stderr_fd, 2)
        keep = sorted({0, 1, 2, channel_fd})
        for low, high in zip(keep, keep[1:] + [2**16]):
            os.closerange(low + 1, high)
        os.chdir(request["scratch"])
        os.environ.clear()
        os.environ.update({"HOME": request["scratch"], "TMPDIR": request["scratch"], "OMP_NUM_THREADS": "1",
                           "MPLBACKEND": "Agg"})
        set_limits(request.get("memory_mb"), request["cpu_seconds"])
        import torch

        torch.set_num_threads(1)
        work(socket.socket(fileno=channel_fd), package_dir, os.path.realpath(request["scratch"]), siblings)
    except (ChannelClosed, ConnectionError):
        pass
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


# ---------------------------------------------------------------------------------------------
# The zygote
# ---------------------------------------------------------------------------------------------

def _children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == me:
                found.append(int(entry))
    return found


def end(pid: int) -> int:
    """End worker ``pid``'s process group, then every process left below the zygote (a descendant
    that left the group is reparented here: the zygote is their subreaper); how many were ended."""
    ended = 0
    try:
        os.killpg(pid, signal.SIGKILL)
        ended += 1
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(200):
        left = _children()
        if not left:
            break
        for child in left:
            try:
                os.kill(child, signal.SIGKILL)
                ended += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    return ended


def load_sibling(name: str) -> types.ModuleType:
    """The module ``name``.py of this folder, loaded by its path (the package itself is never imported here)."""
    spec = importlib.util.spec_from_file_location(f"gloss_lite_grading_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(control_fd: int, package_dir: str) -> None:
    """The zygote's loop: ``{"op": "fork", ...}`` with the worker's channel and stderr as file descriptors
    (answered ``{"pid": ...}``), ``{"op": "end", "pid": ...}`` (answered ``{"ended": n}``)."""
    siblings = types.SimpleNamespace(calls=load_sibling("calls"), confinement=load_sibling("confinement"))
    import numpy  # noqa: F401  (loaded once here, not in every worker)
    import torch.nn.functional  # noqa: F401

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # ended workers are reaped by the kernel
    control = socket.socket(fileno=control_fd)
    vm = next((line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmSize:")), "0") if os.path.exists("/proc/self/status") else "0"
    control.send(json.dumps({"ready": True, "memory_mb": int(vm) // 1024}).encode())
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, 65536, 2)
        except OSError:
            data, fds = b"", []
        if not data:
            break
        request = json.loads(data)
        if request["op"] == "fork":
            pid = os.fork()
            if pid == 0:
                control.close()
                start_worker(fds, request, package_dir, siblings)
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"pid": pid}).encode())
        elif request["op"] == "end":
            control.send(json.dumps({"ended": end(int(request["pid"]))}).encode())
    for child in _children():
        end(child)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 4:
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit("usage: python -I worker.py serve CONTROL_FD PACKAGE_DIR (gloss_lite.course.workers starts it)")
