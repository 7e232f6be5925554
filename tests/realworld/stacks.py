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
import tempfile
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


# --- Node.js and Go stacks ------------------------------------------------------------------------------------------

NODE_DIR = STACKS_DIR / "node_express"
GO_DIR = STACKS_DIR / "go_nethttp"
NODE_MIN = (20, 6)  # the pinned OpenTelemetry JS packages' `engines` (^18.19.0 || >=20.6.0; Express 5 wants >=18)

# what a failed `npm ci` prints when the registry cannot be reached or refuses a package: not a test failure
NPM_ENVIRONMENT_FAILURES = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENETUNREACH",
                            "E403", "E404", "E407", "EPROXY", "SELF_SIGNED_CERT", "UNABLE_TO_GET_ISSUER_CERT",
                            "network request to", "request to https://registry")


def _node_toolchain() -> tuple[str, str, str]:
    """(node, npm, node's version) or StackUnavailable when either is missing or node is older than NODE_MIN."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise StackUnavailable(f"node_express: no {'node' if node is None else 'npm'} on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False,
                             timeout=60).stdout.strip()
    try:
        major, minor = (int(x) for x in version.lstrip("v").split(".")[:2])
    except ValueError:
        raise StackUnavailable(f"node_express: cannot read `node --version`: {version!r}") from None
    if (major, minor) < NODE_MIN:
        raise StackUnavailable(f"node_express: node {version} is older than {NODE_MIN[0]}.{NODE_MIN[1]}")
    return node, npm, version


def _npm_ci(npm: str, dest: Path) -> None:
    """`npm ci` of NODE_DIR's package.json + package-lock.json in a scratch directory; its node_modules moved to
    `dest`. Install scripts are not run (none is needed: protobufjs's postinstall only checks versions)."""
    scratch = Path(tempfile.mkdtemp(prefix=".node_express-", dir=dest.parent))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(NODE_DIR / name, scratch / name)
        env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
               "npm_config_audit": "false"}
        try:
            proc = subprocess.run([npm, "ci", "--ignore-scripts", "--omit=dev", "--no-audit", "--no-fund"],
                                  cwd=scratch, env=env, capture_output=True, text=True, check=False,
                                  timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"node_express: npm ci took more than {INSTALL_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            # npm's first error lines name the cause (code, errno, URL); its last ones are a stack trace
            text = "\n".join([line for line in lines if line.startswith("npm error")][:12] or lines[-15:])
            if any(marker in text for marker in NPM_ENVIRONMENT_FAILURES):
                raise StackUnavailable(f"node_express: npm registry unavailable:\n{text}")
            raise RuntimeError(f"node_express: npm ci failed (exit {proc.returncode}):\n{text}")
        os.replace(scratch / "node_modules", dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def node_modules() -> Path:
    """The node_express stack's `node_modules` (`<cache>/realworld/node_express-<key>/node_modules`), installed
    once by `npm ci` from the committed package-lock.json under `gotools.build_once`'s lock and stamp."""
    from tools import gotools

    _, npm, version = _node_toolchain()
    key = files_key(NODE_DIR / "package.json", NODE_DIR / "package-lock.json", extra=f"node {version.split('.')[0]}")
    dest = cache_root() / "realworld" / f"node_express-{key[:16]}" / "node_modules"

    def build(tmp: Path) -> None:
        # build_once renames `tmp` over `dest`, which it expects to be a file: a directory must be gone first (a
        # run that died between the rename and the stamp leaves one), and a failed install must not leave `tmp`.
        shutil.rmtree(dest, ignore_errors=True)
        try:
            _npm_ci(npm, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    return gotools.build_once(dest, key, build)


def node_express() -> Stack:
    """Express 5 with @opentelemetry/sdk-node, instrumentation-http 0.220.0 and instrumentation-express 0.68.0
    (npm). 0.220.0 is the last instrumentation-http that honours OTEL_SEMCONV_STABILITY_OPT_IN: its default is the
    old HTTP conventions (header key `http.request.header.x_force_trace`), `http` the stable ones
    (`http.request.header.x-force-trace`); from 0.221.0 it emits only the stable ones. Header capture is its
    `headersToSpanAttributes` option (it does not read OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST)."""
    def prepare() -> Launcher:
        modules = node_modules()
        node = shutil.which("node") or "node"
        program = NODE_DIR / "service.js"
        # NODE_PATH: the program lives in the repository, its packages in the cache
        return Launcher(command=lambda role: [node, str(program)], cwd=NODE_DIR, env={"NODE_PATH": str(modules)})
    return Stack("node_express", CONVENTIONS, "grpc", prepare)


GO_BUILD_TIMEOUT_S = 1800


def go_service() -> Path:
    """The go_nethttp program (`<cache>/realworld/go_nethttp-<key>/service`), built once from GO_DIR with the
    committed go.mod/go.sum (modules from the Go module proxy, GOTOOLCHAIN=local)."""
    from tools import gotools

    try:
        go = gotools.find_go()
        sources = [*sorted(GO_DIR.glob("*.go")), GO_DIR / "go.mod", GO_DIR / "go.sum"]
        key = files_key(*sources, extra=gotools.go_version(go))
        binary = cache_root() / "realworld" / f"go_nethttp-{key[:16]}" / "service"

        def build(tmp: Path) -> None:
            gotools.run_go([go, "build", "-trimpath", "-mod=readonly", "-o", str(tmp), "."], cwd=GO_DIR,
                           what="go_nethttp", timeout=GO_BUILD_TIMEOUT_S)

        return gotools.build_once(binary, key, build)
    except gotools.GoToolUnavailable as e:
        raise StackUnavailable(f"go_nethttp: {e}") from None


def go_nethttp() -> Stack:
    """net/http with otelhttp v0.72.0 (handler and transport) and the OTel Go SDK 1.47.0 (Go module proxy).
    otelhttp emits only the stable HTTP conventions and has no OTEL_SEMCONV_STABILITY_OPT_IN switch; it cannot
    capture headers, so the handler sets `http.request.header.x-force-trace` itself."""
    def prepare() -> Launcher:
        binary = go_service()
        return Launcher(command=lambda role: [str(binary)], cwd=GO_DIR)
    return Stack("go_nethttp", ("default",), "http/protobuf", prepare)


def all_stacks() -> list[Stack]:
    """Every stack, in the order the tests and the generated docs list them."""
    return [python_flask(), python_asgi(), python_grpc(), node_express(), go_nethttp()]


def by_name(name: str) -> Stack:
    for stack in all_stacks():
        if stack.name == name:
            return stack
    raise KeyError(f"unknown stack {name!r}; known: {', '.join(s.name for s in all_stacks())}")
