"""The grader's side of the grading worker: start it, call a student's function in it, end it.

``Workers()`` starts the zygote of ``gloss_lite.course.worker`` once per grading run (a fresh
``python -I`` that imports torch and nothing of the package, with an environment of its own);
``workers.start(job)`` forks one worker for one exercise of one submission, in a new empty
scratch folder; ``worker.run(call, *args)`` asks it for one call of the student's function
(``gloss_lite.course.calls``) and returns the decoded result, so a checker
(``gloss_lite.course.checking.run_checker``) compares it here, in the grader; ``worker.end()``
ends the worker's process group and every process left below the zygote, and deletes the
scratch folder. The worker's stderr goes to a file, of which only the end is read.

What a worker sends is read as data only (``calls.decode``), never unpickled; a reply that is too
long, malformed or late ends the worker (``WorkerStopped``, ``TimeUp``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from .calls import MalformedValue, decode, encode
from .checking import TimeUp
from .comparing import StudentRaised
from .worker import MAX_MESSAGE, ChannelClosed, receive, send

WORKER = Path(__file__).resolve().with_name("worker.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
START_SECONDS = 600.0  # for the zygote to import torch on a busy machine
SETUP_SECONDS = 120.0  # for a worker to load its face and lock itself in (not the student's time)


class WorkerStopped(BaseException):
    """The worker ended, broke its channel, or sent what is not an answer (the message says which).

    A BaseException, so a checker's ``except Exception`` does not mistake it for a wrong answer.
    """


class Workers:
    """The zygote that forks the workers of one grading run (a context manager)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="gloss-grading-"))
        self.log = open(self.folder / "zygote.log", "wb")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        environment = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": str(self.folder), "TMPDIR": str(self.folder),
                       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), "serve", str(theirs.fileno()), str(PACKAGE_DIR)],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            env=environment, cwd=self.folder, start_new_session=True)
        theirs.close()
        self.control = ours
        try:
            self.memory_mb = int(self._reply(START_SECONDS)["memory_mb"])
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _reply(self, timeout: float) -> dict:
        self.control.settimeout(timeout)
        try:
            data = self.control.recv(65536)
        except (TimeoutError, OSError):
            data = b""
        if not data:
            raise RuntimeError(f"the grading worker did not start: {self._log_tail()}")
        return json.loads(data)

    def _log_tail(self) -> str:
        text = (self.folder / "zygote.log").read_bytes()[-2000:].decode("utf-8", "replace").strip()
        return text.splitlines()[-1] if text else "no message"

    def start(self, job: dict, *, memory_mb: int | None, cpu_seconds: int) -> Worker:
        """A new worker for ``job`` (see ``worker.work``), its channel open and the job sent."""
        return Worker(self, job, memory_mb=memory_mb, cpu_seconds=cpu_seconds)

    def fork(self, request: dict, fds: list[int]) -> int:
        socket.send_fds(self.control, [json.dumps({"op": "fork", **request}).encode()], fds)
        return int(self._reply(SETUP_SECONDS)["pid"])

    def end(self, pid: int) -> None:
        try:
            self.control.send(json.dumps({"op": "end", "pid": pid}).encode())
            self._reply(SETUP_SECONDS)
        except (OSError, RuntimeError):  # the zygote is gone: end the worker's group from here
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        self.control.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _remove_tree(folder: Path) -> None:
    def writable_then_retry(function, path, _):
        os.chmod(path, stat.S_IRWXU)
        parent = os.path.dirname(path)
        os.chmod(parent, stat.S_IRWXU)
        function(path)

    shutil.rmtree(folder, onerror=writable_then_retry)


class Worker:
    """One worker: ``expect`` its messages, ``run`` calls in it (the caller a checker talks to), ``end`` it."""

    def __init__(self, workers: Workers, job: dict, *, memory_mb: int | None, cpu_seconds: int) -> None:
        self.workers, self.deadline = workers, None
        self.scratch = Path(tempfile.mkdtemp(prefix="gloss-grade-"))
        self.stderr = tempfile.TemporaryFile()
        ours, theirs = socket.socketpair()
        try:
            self.pid = workers.fork({"scratch": str(self.scratch), "memory_mb": memory_mb,
                                     "cpu_seconds": cpu_seconds}, [theirs.fileno(), self.stderr.fileno()])
        finally:
            theirs.close()
        self.channel = ours
        send(self.channel, job)

    def expect(self, deadline: float | None = None) -> dict:
        """The worker's next message; ``TimeUp`` at ``deadline`` (default: ``self.deadline``)."""
        try:
            return receive(self.channel, deadline=deadline or self.deadline, limit=MAX_MESSAGE)
        except TimeoutError:
            raise TimeUp from None
        except (ChannelClosed, OSError) as error:
            raise WorkerStopped(self.stopped(error)) from None

    def stopped(self, error: BaseException) -> str:
        last = self.stderr_tail().strip().splitlines()
        return f"the grading process stopped ({error})" + (f": {last[-1][:300]}" if last else "")

    def run(self, call: str, *args):
        """The student's function through ``calls.CALLS[call]`` on ``args``, in the worker."""
        try:
            send(self.channel, {"call": call, "args": encode(args)})
        except OSError as error:
            raise WorkerStopped(self.stopped(error)) from None
        reply = self.expect()
        if "value" in reply:
            try:
                return decode(reply["value"])
            except MalformedValue as error:
                raise WorkerStopped(f"the grading process sent back what is not a value ({error})") from None
        if isinstance(reply.get("raised"), str):
            raise StudentRaised(reply["raised"][:2000])
        if isinstance(reply.get("not_implemented"), str):
            raise NotImplementedError(reply["not_implemented"][:2000])
        raise WorkerStopped("the grading process sent back what is not an answer")

    def stderr_tail(self, size: int = 4000) -> str:
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(self.stderr.tell() - size, 0))
        return self.stderr.read().decode("utf-8", "replace")

    def end(self) -> None:
        self.channel.close()
        self.workers.end(self.pid)
        self.stderr.close()
        _remove_tree(self.scratch)
