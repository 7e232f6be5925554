"""The table of real-instrumentation stacks (see tests/realworld/README.md for the contract every service obeys).

Each entry is a function returning a `Stack`: cheap to call (nothing installed); `Stack.prepare()` installs what
the stack needs into a cache keyed by a hash of its dependency files, under `${TAILSAMPLE_CACHE:-~/.cache/tailsample}`,
and returns a `Launcher` that gives the command line of one service. A stack whose toolchain or registry is not
available here raises `StackUnavailable` (from `prepare()`); the tests turn it into a skip with the reason.

    from realworld import stacks
    for stack in stacks.all_stacks():
        launcher = stack.prepare()            # may raise StackUnavailable
        argv = launcher.command("frontend")   # started with the contract's environment variables
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
STACKS_DIR = HERE / "stacks"

ROLES = ("frontend", "cart", "payments")
CONVENTIONS = ("default", "http")  # OTEL_SEMCONV_STABILITY_OPT_IN unset, or "http" (stable)
PROTOCOLS = ("http/protobuf", "grpc")  # OTEL_EXPORTER_OTLP_PROTOCOL

INSTALL_TIMEOUT_S = 900


class StackUnavailable(Exception):
    """The stack cannot be prepared on this machine (no toolchain, registry unreachable): skip, don't fail."""


@dataclass(frozen=True)
class Launcher:
    """How to start one service of a prepared stack: `command(role)` run in `cwd` with the contract's environment
    plus `env` (e.g. NODE_PATH)."""

    command: Callable[[str], list[str]]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stack:
    """One ecosystem's three services. `protocol` is the OTLP protocol its recordings use (one per stack; both
    protocols are covered across the table); `grpc_downstream` says DOWNSTREAM is `host:port` (gRPC) rather than a
    base URL."""

    name: str
    conventions: tuple[str, ...]
    protocol: str
    prepare: Callable[[], Launcher]
    grpc_downstream: bool = False


def cache_root() -> Path:
    """`${TAILSAMPLE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/tailsample}` (empty variables count as unset)."""
    root = os.environ.get("TAILSAMPLE_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tailsample"


def files_key(*paths: Path, extra: str = "") -> str:
    """SHA-256 over the names and contents of `paths` (and `extra`, e.g. a toolchain version): a cache key."""
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive `fcntl` lock on `path` (one process installs, the others wait and reuse the result)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def run_install(cmd: list[str], *, cwd: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run an install command; StackUnavailable when the registry cannot be reached, RuntimeError otherwise."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                              check=False)
    except FileNotFoundError as e:
        raise StackUnavailable(f"{what}: {e}") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} took more than {INSTALL_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        text = "\n".join(out)
        if any(m in text for m in ("Could not find a version", "No matching distribution", "Network is unreachable",
                                   "Temporary failure in name resolution", "ENOTFOUND", "EAI_AGAIN",
                                   "dial tcp", "connection refused", "Connection refused")):
            raise StackUnavailable(f"{what}: registry unavailable:\n{text}")
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{text}")


# --- Python stacks (one venv for all three, keyed by the requirements file) ---------------------------------------

PYTHON_REQUIREMENTS = STACKS_DIR / "python-requirements.txt"


def python_venv() -> Path:
    """The Python stacks' venv (`<cache>/realworld/python-<key>/`), created once from PYTHON_REQUIREMENTS with pip.

    Never the project's venv: the instrumentation pins its own OpenTelemetry API and SDK versions.
    """
    base = sys._base_executable if hasattr(sys, "_base_executable") else sys.executable
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = files_key(PYTHON_REQUIREMENTS, extra=version)
    venv = cache_root() / "realworld" / f"python-{key[:16]}"
    stamp = venv / ".complete"
    if stamp.exists():
        return venv
    with locked(venv.with_name(venv.name + ".lock")):
        if stamp.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        run_install([base, "-m", "venv", str(venv)], cwd=HERE, what="python -m venv")
        run_install([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                     "-r", str(PYTHON_REQUIREMENTS)], cwd=HERE, what=f"pip install -r {PYTHON_REQUIREMENTS.name}")
        stamp.write_text(key + "\n")
    return venv


def _python_launcher(stack: str) -> Callable[[], Launcher]:
    def prepare() -> Launcher:
        python = python_venv() / "bin" / "python"
        program = STACKS_DIR / stack / "service.py"
        return Launcher(command=lambda role: [str(python), str(program)], cwd=STACKS_DIR / stack,
                        env={"PYTHONDONTWRITEBYTECODE": "1"})
    return prepare


def python_flask() -> Stack:
    """Flask + requests instrumentation (WSGI on werkzeug's threaded server)."""
    return Stack("python_flask", CONVENTIONS, "http/protobuf", _python_launcher("python_flask"))


def python_asgi() -> Stack:
    """Starlette on uvicorn + httpx instrumentation."""
    return Stack("python_asgi", CONVENTIONS, "grpc", _python_launcher("python_asgi"))


def python_grpc() -> Stack:
    """grpcio client and server instrumentation; frontend's HTTP side is Flask + its instrumentation."""
    return Stack("python_grpc", CONVENTIONS, "http/protobuf", _python_launcher("python_grpc"), grpc_downstream=True)


# --- Node.js and Go stacks: written by the other helper (tests/realworld/stacks/node_express/, go_nethttp/) ------
# Replace the bodies below: return a Stack whose `prepare` installs into `cache_root()` keyed by `files_key(...)`
# of the dependency files and raises StackUnavailable when the toolchain or registry is missing.

def node_express() -> Stack:
    """Node.js http/express auto-instrumentation (npm)."""
    def prepare() -> Launcher:
        raise StackUnavailable("node_express: not written yet")
    return Stack("node_express", CONVENTIONS, "grpc", prepare)


def go_nethttp() -> Stack:
    """Go net/http with otelhttp (Go module proxy)."""
    def prepare() -> Launcher:
        raise StackUnavailable("go_nethttp: not written yet")
    return Stack("go_nethttp", ("default",), "http/protobuf", prepare)


def all_stacks() -> list[Stack]:
    """Every stack, in the order the tests and the generated docs list them."""
    return [python_flask(), python_asgi(), python_grpc(), node_express(), go_nethttp()]


def by_name(name: str) -> Stack:
    for stack in all_stacks():
        if stack.name == name:
            return stack
    raise KeyError(f"unknown stack {name!r}; known: {', '.join(s.name for s in all_stacks())}")
