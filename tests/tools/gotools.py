"""Go-built OpenTelemetry tools for the tests, built from the Go module proxy and cached outside the repository.

    from tools import gotools
    gotools.telemetrygen()  # -> Path of telemetrygen (opentelemetry-collector-contrib/cmd/telemetrygen)
    gotools.otelcol()       # -> Path of a collector built by ocb from tests/tools/otelcol-builder.yaml
    gotools.jaeger()        # -> Path of Jaeger v2 (cmd/jaeger), built in a scratch module
    gotools.prometheus()    # -> Path of Prometheus (cmd/prometheus), built in a scratch module
    gotools.promtool()      # -> Path of promtool (cmd/promtool), same module and version

Both raise `GoToolUnavailable` when this machine cannot build them (no `go` on PATH, module proxy unreachable or
refusing a module, toolchain too old): a test should skip with that message (`gotools.require(gotools.otelcol)`
does it). Any other build failure raises `GoBuildError` with the tail of the build output: it fails the test.

Binaries live in `${TAILSAMPLE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/tailsample}/go/<tool>-<key>/`, where the key is
a SHA-256 of what determines the binary (module and version, the builder manifest, `go version`): another clone
on the same machine reuses them, and a change of any of those builds a new one beside the old. A build runs under
an exclusive `fcntl` lock (one process builds, the others wait and reuse its result), into a temporary name that
is renamed into place when complete. Go's module and build caches are Go's own (`go env GOMODCACHE GOCACHE`).
`go` always runs with GOTOOLCHAIN=local: it never downloads another toolchain.

The parity suite (tests/parity/conftest.py) builds its reference program with `build_once` and `run_go` too.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

TOOLS = Path(__file__).resolve().parent
MANIFEST = TOOLS / "otelcol-builder.yaml"

TELEMETRYGEN_MODULE = "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"
TELEMETRYGEN_VERSION = "v0.161.0"
JAEGER_MODULE = "github.com/jaegertracing/jaeger"
JAEGER_PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
PROMETHEUS_VERSION = "v0.316.0"  # Prometheus 3.x's Go module version; its API and promtool, no UI assets
JAEGER_VERSION = "v1.75.0"  # Jaeger v2 (the OpenTelemetry-collector-based all-in-one); its query API, no UI assets
BUILDER_MODULE = "go.opentelemetry.io/collector/cmd/builder"
BUILDER_VERSION = "v0.161.0"  # the collector release of the manifest's components (core beta v0.161.0, stable v1.67.0)

INSTALL_TIMEOUT_S = 1800
OTELCOL_TIMEOUT_S = 3600  # fetches and compiles the collector and its components: many minutes on 2 cores

# what a failed `go` command prints when the module proxy cannot be reached or refuses a module, or when the local
# toolchain is too old: the machine cannot build the tool, which is not a failure of the tests
ENVIRONMENT_FAILURES = ("dial tcp", "no such host", "proxyconnect", "connection refused", "i/o timeout",
                        "TLS handshake", "403 Forbidden", "404 Not Found", "requires go >=",
                        "toolchain not available", "module lookup disabled")


class GoToolUnavailable(Exception):
    """The tool cannot be built on this machine (no Go, no module proxy, toolchain too old): skip, don't fail."""


class GoBuildError(RuntimeError):
    """Building the tool failed for a reason that is not the environment's: a real failure."""


def cache_dir() -> Path:
    """`${TAILSAMPLE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/tailsample}/go` (empty variables count as unset)."""
    root = os.environ.get("TAILSAMPLE_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tailsample"
    return base / "go"


def find_go() -> str:
    go = shutil.which("go")
    if go is None:
        raise GoToolUnavailable("no `go` on PATH")
    return go


@functools.cache
def go_version(go: str) -> str:
    """`go version`'s line, e.g. "go version go1.26.8 linux/amd64" (part of every cache key)."""
    proc = subprocess.run([go, "version"], capture_output=True, text=True, check=False,
                          env=go_env(), timeout=60)
    return proc.stdout.strip()


def go_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "GOTOOLCHAIN": "local", **extra}  # GOTOOLCHAIN=local: never download another toolchain


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_go(cmd: list[str], *, cwd: Path, what: str, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a build command; its combined output, or GoToolUnavailable / GoBuildError (see the module's doc).

    The command runs in its own process group, killed whole on timeout (go starts compilers and linkers).
    """
    proc = subprocess.Popen(cmd, cwd=cwd, env=env if env is not None else go_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise GoBuildError(f"{what} took more than {timeout:.0f} s:\n{_tail(out)}") from None
    if proc.returncode != 0:
        if any(marker in out for marker in ENVIRONMENT_FAILURES):
            raise GoToolUnavailable(f"cannot build {what} here (modules or toolchain unavailable):\n{_tail(out)}")
        raise GoBuildError(f"{what} failed (exit {proc.returncode}) in {cwd}:\n{_tail(out)}")
    return out


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed
        yield


def build_once(binary: Path, key: str, build: Callable[[Path], None]) -> Path:
    """`binary`, built by `build(temporary_path)` unless it exists with the stamp `<binary>.sha256` equal to `key`.

    The build runs under an exclusive lock on `<binary>.lock`, so concurrent processes build it once; the result
    is renamed into place, then the stamp written, so neither a half-written binary nor a stale stamp is ever
    taken for a complete build.
    """
    stamp = binary.with_name(binary.name + ".sha256")

    def current() -> bool:
        return binary.exists() and stamp.exists() and stamp.read_text().strip() == key

    if current():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with _locked(binary.with_name(binary.name + ".lock")):
        if current():  # built by another process while this one waited
            return binary
        tmp = binary.with_name(f".{binary.name}.{os.getpid()}.tmp")
        try:
            build(tmp)
            os.replace(tmp, binary)
        finally:
            tmp.unlink(missing_ok=True)
        stamp_tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
        stamp_tmp.write_text(key + "\n")
        os.replace(stamp_tmp, stamp)
    return binary


def _key(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _go_install(go: str, module: str, version: str, binary_name: str, dest: Path, *, what: str) -> None:
    """`go install module@version` into a scratch GOBIN beside `dest`, then the binary moved to `dest`."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{binary_name}-", dir=dest.parent))
    try:
        run_go([go, "install", "-trimpath", f"{module}@{version}"], cwd=scratch, what=what,
               timeout=INSTALL_TIMEOUT_S, env=go_env(GOBIN=str(scratch)))
        os.replace(scratch / binary_name, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _tool(name: str, key: str, build: Callable[[Path], None]) -> Path:
    return build_once(cache_dir() / f"{name}-{key[:16]}" / name, key, build)


_memo: dict[str, Path | Exception] = {}


def _memoised(fn: Callable[[], Path]) -> Callable[[], Path]:
    """Once per process, failures included (a refused module is not retried by every test)."""

    @functools.wraps(fn)
    def wrapper() -> Path:
        if fn.__name__ not in _memo:
            try:
                _memo[fn.__name__] = fn()
            except (GoToolUnavailable, GoBuildError) as e:
                _memo[fn.__name__] = e
        result = _memo[fn.__name__]
        if isinstance(result, Exception):
            raise result
        return result

    return wrapper


@_memoised
def telemetrygen() -> Path:
    """telemetrygen (`TELEMETRYGEN_MODULE@TELEMETRYGEN_VERSION`), installed with `go install` into the cache."""
    go = find_go()
    key = _key("telemetrygen", f"{TELEMETRYGEN_MODULE}@{TELEMETRYGEN_VERSION}", go_version(go))
    return _tool("telemetrygen", key, lambda dest: _go_install(
        go, TELEMETRYGEN_MODULE, TELEMETRYGEN_VERSION, "telemetrygen", dest,
        what=f"telemetrygen {TELEMETRYGEN_VERSION}"))


@_memoised
def builder() -> Path:
    """The OpenTelemetry Collector Builder (ocb, `BUILDER_MODULE@BUILDER_VERSION`)."""
    go = find_go()
    key = _key("builder", f"{BUILDER_MODULE}@{BUILDER_VERSION}", go_version(go))
    return _tool("builder", key, lambda dest: _go_install(
        go, BUILDER_MODULE, BUILDER_VERSION, "builder", dest, what=f"the collector builder {BUILDER_VERSION}"))


@_memoised
def otelcol() -> Path:
    """The collector described by tests/tools/otelcol-builder.yaml, built by ocb (`builder()`)."""
    go = find_go()
    manifest = MANIFEST.read_bytes()
    key = _key("otelcol", f"{BUILDER_MODULE}@{BUILDER_VERSION}", manifest, go_version(go))
    config = yaml.safe_load(manifest)
    name = config["dist"]["name"]

    def build(dest: Path) -> None:
        ocb = builder()
        scratch = Path(tempfile.mkdtemp(prefix=".otelcol-", dir=dest.parent))
        try:
            config["dist"]["output_path"] = str(scratch / "dist")
            config["dist"]["go"] = go  # the `go` found here, not whichever ocb would look up
            effective = scratch / "manifest.yaml"
            effective.write_text(yaml.safe_dump(config, sort_keys=False))
            run_go([str(ocb), "--config", str(effective)], cwd=scratch, what=f"the collector ({MANIFEST.name})",
                   timeout=OTELCOL_TIMEOUT_S)
            os.replace(scratch / "dist" / name, dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    return _tool("otelcol", key, build)


@_memoised
def jaeger() -> Path:
    """Jaeger v2 (`JAEGER_PACKAGE@JAEGER_VERSION`), about 9 minutes to build on 2 cores, then cached.

    `go install` refuses the module (its go.mod has replace directives), so it is built as a tool dependency of a
    scratch module (`go get -tool`, then `go build`), which resolves the versions without those replacements.
    """
    go = find_go()
    key = _key("jaeger", f"{JAEGER_PACKAGE}@{JAEGER_VERSION}", go_version(go))

    def build(dest: Path) -> None:
        scratch = Path(tempfile.mkdtemp(prefix=".jaeger-", dir=dest.parent))
        try:
            what = f"jaeger {JAEGER_VERSION}"
            run_go([go, "mod", "init", "tailsample.test/jaeger"], cwd=scratch, what=what, timeout=60)
            run_go([go, "get", "-tool", f"{JAEGER_PACKAGE}@{JAEGER_VERSION}"], cwd=scratch, what=what,
                   timeout=INSTALL_TIMEOUT_S)
            run_go([go, "build", "-trimpath", "-o", str(dest), JAEGER_PACKAGE], cwd=scratch, what=what,
                   timeout=OTELCOL_TIMEOUT_S)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    return _tool("jaeger", key, build)


def _scratch_tool_build(go: str, module: str, version: str, package: str, dest: Path, *, what: str) -> None:
    """`package` built as a tool dependency of a scratch module (`go get -tool`, then `go build`).

    Used where `go install module@version` refuses the module (replace directives in its go.mod).
    """
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        run_go([go, "mod", "init", "tailsample.test/tool"], cwd=scratch, what=what, timeout=60)
        run_go([go, "get", "-tool", f"{package}@{version}"], cwd=scratch, what=what, timeout=INSTALL_TIMEOUT_S)
        run_go([go, "build", "-trimpath", "-o", str(dest), package], cwd=scratch, what=what,
               timeout=OTELCOL_TIMEOUT_S)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _prometheus_tool(name: str) -> Path:
    go = find_go()
    package = f"{PROMETHEUS_MODULE}/cmd/{name}"
    key = _key(name, f"{package}@{PROMETHEUS_VERSION}", go_version(go))
    return _tool(name, key, lambda dest: _scratch_tool_build(
        go, PROMETHEUS_MODULE, PROMETHEUS_VERSION, package, dest, what=f"{name} {PROMETHEUS_VERSION}"))


@_memoised
def prometheus() -> Path:
    """Prometheus (`PROMETHEUS_MODULE/cmd/prometheus@PROMETHEUS_VERSION`), many minutes to build on 2 cores, then
    cached; built without its web UI assets (the tests use only its HTTP API)."""
    return _prometheus_tool("prometheus")


@_memoised
def promtool() -> Path:
    """promtool (`cmd/promtool`, the module and version of `prometheus()`): `check rules` and `test rules`."""
    return _prometheus_tool("promtool")


def require(tool: Callable[[], Path]) -> Path:
    """`tool()`, or the calling test skipped with the reason when this machine cannot build it."""
    import pytest

    try:
        return tool()
    except GoToolUnavailable as e:
        pytest.skip(f"{tool.__name__} unavailable: {e}")
