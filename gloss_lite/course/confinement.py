"""How a grading worker locks itself in before it runs a student's code (``gloss_lite.course.worker``).

``lock_in(job, package_dir, scratch)``:

- ``load_face``: a package ``gloss_lite`` of the worker's own that holds only the exercise's face
  (``Exercise.face``, e.g. ``graph`` and ``lpa``) and the modules those import; its search path is
  then emptied, so no other module of the package (the course and its references, training, ...)
  can be imported, by any name or route;
- ``withhold_functions`` and ``Withheld``: the exercise's withheld torch functions say so when
  called, its withheld libraries and the rest of the package cannot be imported;
- ``landlock`` (Linux 5.13+): the kernel holds the process, native code included, to reading
  Python's own files (``read_roots``: the standard library, each installed package but this one,
  the system's shared libraries) and reading and writing its scratch folder; no file can be
  executed, no TCP connection made, no signal sent out;
- ``audit_guard``: Python's audit hooks, which code cannot remove, refuse the same files, starting
  processes, sockets, signals, new C libraries and importing what is withheld.

This module imports nothing of the package: the worker loads it from its own folder.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.abc
import os
import struct
import sys
import sysconfig
import types

PROCESS_EVENTS = {"os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.startfile",
                  "subprocess.Popen", "pty.spawn"}
DENIED_EVENTS = PROCESS_EVENTS | {
    "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit", "resource.prlimit", "os.symlink", "os.link",
    "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo", "ctypes.dlopen",
    "ctypes.dlsym", "ctypes.cdata", "ctypes.string_at", "ctypes.wstring_at", "ctypes.addressof", "ctypes.PyObj_FromPtr",
    "sys.addaudithook", "winreg.OpenKey"}
PATH_EVENTS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2, "os.truncate": 1, "os.chmod": 1,
               "os.chown": 1, "os.utime": 1, "shutil.rmtree": 1, "os.chdir": 0, "os.listdir": 0, "os.scandir": 0}
READ_ONLY_EVENTS = {"os.chdir", "os.listdir", "os.scandir"}
NOT_IMPORTABLE = ("_posixsubprocess", "_ctypes", "ctypes")  # once the worker is locked in


def load_face(package_dir: str, face: list[str]) -> types.ModuleType:
    """A package ``gloss_lite`` holding only the ``face`` modules (and what they import), whose search
    path is then emptied; its public names are those of the face modules."""
    package = types.ModuleType("gloss_lite", "The face of gloss_lite that a graded exercise may use.")
    package.__path__ = [package_dir]
    package.__package__ = "gloss_lite"
    sys.modules["gloss_lite"] = package
    for name in face:
        module = importlib.import_module(f"gloss_lite.{name}")
        for attribute, value in vars(module).items():
            if not attribute.startswith("_") and getattr(value, "__module__", None) == module.__name__:
                setattr(package, attribute, value)
    package.__path__ = []
    return package


def not_importable(name: str, exercise_id: str) -> ImportError:
    return ImportError(f"{name} cannot be imported while exercise {exercise_id} is graded: a solution uses torch "
                       f"and the functions the exercise names, not an implementation of what it asks for")


class Withheld(importlib.abc.MetaPathFinder):
    """Refuses every module of the package outside the face, and the exercise's withheld libraries."""

    def __init__(self, roots: set[str], exercise_id: str) -> None:
        self.roots, self.exercise_id = roots, exercise_id

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.roots:
            raise not_importable(name, self.exercise_id)
        return None


def withhold_functions(dotted_names: list[str]) -> None:
    """Replace each withheld torch function (``torch.autograd.grad``) by one that says it is withheld."""
    for dotted in dotted_names:
        owner_name, _, attribute = dotted.rpartition(".")
        parts = owner_name.split(".")
        owner = sys.modules.get(parts[0])
        for part in parts[1:]:
            owner = getattr(owner, part, None)
        if owner is None or not hasattr(owner, attribute):
            continue

        def withheld(*args, _name=dotted, **kwargs):
            raise RuntimeError(f"{_name} is not available in this exercise: it asks for the computation by hand")

        setattr(owner, attribute, withheld)


# ---------------------------------------------------------------------------------------------
# Locking the worker in
# ---------------------------------------------------------------------------------------------

def site_folders() -> list[str]:
    """The folders of installed packages on ``sys.path`` (their names may be listed, not all their files read)."""
    return sorted({os.path.realpath(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))
                   and os.path.isdir(p)})


def read_roots(package_dir: str) -> list[str]:
    """The folders and files a worker may read: Python's standard library, the installed packages
    (each one, the course's package excepted), the system's shared libraries, a few device and
    process files."""
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")}
    for site in site_folders():
        for entry in os.listdir(site):
            if not entry.lower().replace("-", "_").startswith(("gloss_lite", "__editable__")):
                roots.add(os.path.join(site, entry))
    roots |= {"/usr/lib", "/lib", "/lib64", "/usr/lib64", "/usr/share/zoneinfo", "/etc/ld.so.cache",
              "/etc/localtime", "/dev/null", "/dev/urandom", "/dev/zero", "/proc/cpuinfo", "/proc/meminfo",
              f"/proc/{os.getpid()}", "/sys", sys.base_prefix + "/lib"}
    package = os.path.realpath(package_dir)
    return sorted(r for r in {os.path.realpath(r) for r in roots if r} if os.path.exists(r)
                  and not (r == package or r.startswith(package + os.sep) or package.startswith(r + os.sep)))


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def audit_guard(scratch: str, readable: list[str], listable: list[str], refused_imports: set[str],
                exercise_id: str):
    """The audit hook of a locked-in worker (see the module's docstring)."""

    def allowed(path, writing: bool, listing: bool = False) -> bool:
        if isinstance(path, int):
            return True  # a file descriptor opened before, or by the rules below
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        if "gloss_lite" in real.split(os.sep):
            return False
        if listing:
            return _inside(real, [scratch, *readable, *listable])
        return _inside(real, [scratch, "/dev/null"]) or (not writing and _inside(real, readable))

    def hook(event: str, args: tuple) -> None:
        if event in DENIED_EVENTS:
            raise PermissionError(f"grading worker: {event} is not allowed here")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = any(c in (mode or "") for c in "wax+") or bool(
                (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            if not allowed(path, writing):
                raise PermissionError(f"grading worker: opening {path!r} is not allowed here (only Python's own "
                                      f"files and the scratch folder)")
        elif event in PATH_EVENTS:
            for path in args[: max(PATH_EVENTS[event], 1)]:
                if path is not None and not allowed(path, event not in READ_ONLY_EVENTS, event in READ_ONLY_EVENTS):
                    raise PermissionError(f"grading worker: {event} on {path!r} is not allowed here")
        elif event == "import" and args and str(args[0]).partition(".")[0] in refused_imports:
            raise not_importable(str(args[0]), exercise_id)

    return hook


def landlock(scratch: str, readable: list[str], listable: list[str]) -> bool:
    """Let the kernel hold the worker to ``readable`` (read), ``listable`` (list the names in it) and
    ``scratch`` (read and write), with no
    file executable, no TCP and no signal out; False where Landlock is not available."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # landlock_create_ruleset: version
    if abi < 1:
        return False
    # execute .. make symlink (ABI 1), refer (2), truncate (3), ioctl on devices (5)
    fs_rights = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0)
    fs_rights |= 1 << 15 if abi >= 5 else 0
    file_rights = 0b110 | (1 << 14 if abi >= 3 else 0)  # write, read, truncate: what a rule on a file may hold
    attr = struct.pack("QQQ", fs_rights, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(444, ctypes.c_char_p(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    read = (1 << 2) | (1 << 3)
    rules = [(path, read) for path in readable] + [(path, 1 << 3) for path in listable]
    rules += [(scratch, fs_rights & ~1), ("/dev/null", 0b110)]
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        if not os.path.isdir(path):
            rights &= file_rights
        rule = struct.pack("=Qi", rights, fd)
        libc.syscall(445, ruleset, ctypes.c_int(1), ctypes.c_char_p(rule), ctypes.c_uint32(0))
        os.close(fd)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    restricted = libc.syscall(446, ruleset, ctypes.c_uint32(0)) == 0
    os.close(ruleset)
    return restricted


def lock_in(job: dict, package_dir: str, scratch: str) -> bool:
    """Steps 2 and 3 of the module's docstring; returns whether Landlock holds the worker too."""
    load_face(package_dir, job["face"])
    modules = [name for name in job["withheld"] if "." not in name]
    withhold_functions([name for name in job["withheld"] if "." in name])
    sys.meta_path.insert(0, Withheld({"gloss_lite", *modules}, job["exercise"]))
    fork_exec = sys.modules.get("_posixsubprocess")
    if fork_exec is not None:
        fork_exec.fork_exec = withhold_process_start
    readable, listable = read_roots(package_dir), site_folders()
    sys.path[:] = [p for p in sys.path if _inside(os.path.realpath(p), readable + listable)]
    importlib.invalidate_caches()
    kernel = landlock(scratch, readable, listable)
    sys.addaudithook(audit_guard(scratch, readable, listable, {"gloss_lite", *modules, *NOT_IMPORTABLE},
                                 job["exercise"]))
    return kernel


def withhold_process_start(*args, **kwargs):
    raise PermissionError("grading worker: starting a process is not allowed here")


