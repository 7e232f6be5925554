"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1, for tests and benchmarks.

The broker's jars come from Maven Central through `mvn` (see pom.xml beside this file) and are cached under
~/.cache/tailsample/kafka/<version>/libs ($TAILSAMPLE_KAFKA_HOME replaces ~/.cache/tailsample/kafka). Each broker
gets a fresh temporary directory (config, data, log) that is removed again by stop().

    python scripts/kafka/broker.py install          # fetch the jars (once), print the libs directory
    python scripts/kafka/broker.py run [--port N]   # run a broker in the foreground until Ctrl-C

    with KafkaBroker(num_partitions=4) as broker:
        broker.create_topic("spans", partitions=4)
        producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})

Standard library only, so that it runs before the project (or confluent-kafka) is installed: readiness is checked
with raw Kafka requests, and topics are created with confluent-kafka when it is importable, else with the bundled
TopicCommand.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType

KAFKA_VERSION = "3.9.2"  # keep in step with <kafka.version> in pom.xml
POM = Path(__file__).resolve().with_name("pom.xml")
STAMP = "libs.complete"
# the jar that must be in a complete copy (a partial one is never renamed into place, but be sure)
CORE_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"

# Kafka 3.9 class names (Kafka 4.x moved StorageTool to org.apache.kafka.tools)
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
TOPIC_TOOL = "org.apache.kafka.tools.TopicCommand"
READY_LINE = "Kafka Server started"  # "[KafkaRaftServer nodeId=1] Kafka Server started (kafka.server.KafkaRaftServer)"

# short-lived tool JVMs start about twice as fast with C1 only and the serial collector
TOOL_JVM_OPTS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m", "-Djava.awt.headless=true")
# the tools' own logging: warnings to stderr, which is captured and shown when they fail
TOOLS_LOG4J = """\
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


class KafkaSetupError(RuntimeError):
    """Installing, starting or talking to the broker failed; the message says why (and shows the broker log)."""


# ---------------------------------------------------------------------------------------------------- install


def kafka_home() -> Path:
    """The cache root: $TAILSAMPLE_KAFKA_HOME, else ~/.cache/tailsample/kafka (versions live below it)."""
    env = os.environ.get("TAILSAMPLE_KAFKA_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tailsample" / "kafka"


def libs_dir(cache_dir: Path | None = None) -> Path:
    """Where install() puts the jars: <cache_dir or kafka_home()>/<version>/libs."""
    return (cache_dir or kafka_home()) / KAFKA_VERSION / "libs"


def is_installed(cache_dir: Path | None = None) -> bool:
    libs = libs_dir(cache_dir)
    return (libs.parent / STAMP).is_file() and (libs / CORE_JAR).is_file()


def find_java() -> str | None:
    """$JAVA_HOME/bin/java if set, else java on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        return str(Path(java_home, "bin", "java"))
    return shutil.which("java")


def _require_java() -> str:
    java = find_java()
    if java is None:
        raise KafkaSetupError("java not found (neither $JAVA_HOME/bin/java nor on PATH): Kafka needs Java 11+")
    return java


def _java_feature_version(java: str) -> int:
    """The major version from the JDK's `release` file (0 if unknown): cheaper than running `java -version`."""
    release = Path(java).resolve().parent.parent / "release"
    with contextlib.suppress(OSError, ValueError):
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                version = line.split("=", 1)[1].strip('"')
                major = version.split(".")[0]
                return int(version.split(".")[1]) if major == "1" else int(major)
    return 0


class _ClassDataArchive:
    """Application class-data sharing (AppCDS) for one kind of JVM: the first run dumps the classes it loaded into
    <version dir>/cds/ at exit, later runs map them, which cuts the broker's start from ~2.6 s to ~1.6 s.

    The archive is written under a unique name and renamed into place only after a JVM that exited by itself
    (a SIGKILLed one may leave half a file). Off with TAILSAMPLE_KAFKA_CDS=0; needs Java 13+ (dynamic archives).
    The JVM checks the archive against its own build and the classpath, and ignores it when they differ.
    """

    def __init__(self, java: str, libs: Path, name: str) -> None:
        version = _java_feature_version(java)
        enabled = version >= 13 and os.environ.get("TAILSAMPLE_KAFKA_CDS", "1") != "0"
        java_home = Path(java).resolve().parent.parent
        self.path = libs.parent / "cds" / f"{name}-java{version}-{zlib.crc32(bytes(java_home)):08x}.jsa"
        self.enabled = enabled
        self.pending: Path | None = None

    def jvm_options(self) -> list[str]:
        if not self.enabled:
            return []
        if self.path.is_file():
            return [f"-XX:SharedArchiveFile={self.path}", "-Xshare:auto"]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # a read-only cache: run without
            return []
        self.pending = self.path.with_name(f"{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
        return [f"-XX:ArchiveClassesAtExit={self.pending}"]

    def finish(self, exited_normally: bool) -> None:
        """After the JVM has exited: keep the dumped archive if the exit was an orderly one."""
        if self.pending is None:
            return
        if exited_normally and self.pending.is_file() and not self.path.exists():
            os.replace(self.pending, self.path)
        self.pending.unlink(missing_ok=True)
        self.pending = None


def install(cache_dir: Path | None = None, *, timeout: float = 900.0) -> Path:
    """Fetch the broker's jars with Maven into the cache (once) and return the libs directory.

    Idempotent and safe to call from concurrent processes: the copy is made under an exclusive lock into a
    scratch directory that is renamed into place, and a stamp file marks it complete.
    """
    libs = libs_dir(cache_dir)
    if is_installed(cache_dir):
        return libs
    _require_java()  # fail early: jars without a JVM are no use
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(f"mvn not found on PATH: it is needed once to fetch Kafka {KAFKA_VERSION} into {libs}")
    version_dir = libs.parent
    version_dir.mkdir(parents=True, exist_ok=True)
    with open(version_dir / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if is_installed(cache_dir):  # another process finished while we waited
            return libs
        scratch = Path(tempfile.mkdtemp(prefix="libs.partial-", dir=version_dir))
        try:
            cmd = [
                mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                f"-DoutputDirectory={scratch}", "-DincludeScope=runtime",
            ]  # fmt: skip
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as exc:
                raise KafkaSetupError(f"mvn did not finish within {timeout:.0f}s: {' '.join(cmd)}") from exc
            if proc.returncode != 0 or not (scratch / CORE_JAR).is_file():
                output = _tail_lines(proc.stdout + proc.stderr, 40)
                raise KafkaSetupError(f"mvn failed (exit {proc.returncode}): {' '.join(cmd)}\n{output}")
            if libs.exists():  # a copy left by an interrupted older run (no stamp)
                shutil.rmtree(libs)
            scratch.chmod(0o755)  # mkdtemp makes it private
            scratch.rename(libs)
            (version_dir / STAMP).write_text(f"kafka {KAFKA_VERSION}\n")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return libs


# ---------------------------------------------------------------------------------------------------- broker


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open together, so the kernel cannot hand out one twice)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _random_cluster_id() -> str:
    """Kafka's Uuid.randomUuid() format: 16 random bytes, URL-safe base64 without padding, never starting with '-'
    (it would read as a command-line option). Saves a JVM launch of `StorageTool random-uuid`."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail_lines(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGTERM the JVM when the Python process dies without calling stop() (e.g.
    pytest killed by a timeout), so that no orphan broker keeps a core busy. Linux only; prctl is looked up here,
    in the parent, since after fork() only async-signal-safe work is sound (the client libraries run threads)."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


# Readiness is checked with three raw Kafka requests (old, non-flexible versions that Kafka 2.x-3.x all accept), so
# that it needs no client library. They also make the broker create __consumer_offsets and fetch a block of producer
# ids now: left to the first consumer / idempotent producer, librdkafka's retry backoff turns that into a 1-3 s
# pause. (AdminClient.list_consumer_group_offsets would do it too, but librdkafka <= 2.16 segfaults when it gets
# NOT_COORDINATOR, librdkafka#5040.)
_CLIENT_ID = b"tailsample-broker-ready"
_FIND_COORDINATOR, _OFFSET_FETCH, _INIT_PRODUCER_ID = 10, 9, 22


def _kafka_string(value: bytes) -> bytes:
    return struct.pack(">h", len(value)) + value


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def _kafka_request(sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes) -> bytes:
    """Send one request (header v1) and return the response body (after the v0 response header)."""
    message = struct.pack(">hhi", api_key, version, correlation) + _kafka_string(_CLIENT_ID) + body
    sock.sendall(struct.pack(">i", len(message)) + message)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    response = _recv_exact(sock, size)
    if struct.unpack(">i", response[:4])[0] != correlation:
        raise ValueError("unexpected correlation id in a Kafka response")
    return response[4:]


def _coordinators_ready(port: int) -> bool:
    """True once a consumer group and an idempotent producer would be served without a retry."""
    group = _kafka_string(b"tailsample-broker-ready")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # FindCoordinator v0 {key}: error, node, host, port. The first one creates __consumer_offsets.
        (error,) = struct.unpack(">h", _kafka_request(sock, _FIND_COORDINATOR, 0, 1, group)[:2])
        if error:
            return False
        # OffsetFetch v2 {group, topics=null}: [topics] (none: a group nobody uses), error. 0 once loaded.
        reply = _kafka_request(sock, _OFFSET_FETCH, 2, 2, group + struct.pack(">i", -1))
        (topics,) = struct.unpack(">i", reply[:4])
        if topics != 0 or struct.unpack(">h", reply[4:6])[0]:
            return False
        # InitProducerId v0 {transactional_id=null, timeout}: throttle, error, producer id, epoch.
        reply = _kafka_request(sock, _INIT_PRODUCER_ID, 0, 3, struct.pack(">hi", -1, 60_000))
        (error,) = struct.unpack(">h", reply[4:6])
        return bool(error == 0)


class KafkaBroker:
    """One Kafka broker+controller (KRaft combined mode, node id 1) bound to 127.0.0.1.

    Ports default to free ones picked at start(). `config` adds or overrides server.properties entries. Use it as a
    context manager, or call start() and stop(). kill() SIGKILLs the JVM (a crash); stop() still cleans up after it.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        controller_port: int = 0,
        num_partitions: int = 1,
        auto_create_topics: bool = True,
        heap: str = "512m",
        config: Mapping[str, object] | None = None,
        libs: Path | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        self.requested_port = port
        self.requested_controller_port = controller_port
        self.num_partitions = num_partitions
        self.auto_create_topics = auto_create_topics
        self.heap = heap
        self.extra_config = dict(config or {})
        self.libs = libs
        self.startup_timeout = startup_timeout
        self.port = 0
        self.controller_port = 0
        self.cluster_id = ""
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._cds: _ClassDataArchive | None = None

    # -- properties

    @property
    def bootstrap(self) -> str:
        """The bootstrap.servers value for clients: "127.0.0.1:<port>"."""
        if not self.port:
            raise KafkaSetupError("the broker is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.workdir is None:
            raise KafkaSetupError("the broker is not started")
        return self.workdir / "server.log"

    def log_tail(self, lines: int = 30) -> str:
        """For error messages: the broker log's first errors (with the exception line after each: the cause, which
        the shutdown that follows buries), its last lines, and the JVM's own output (crashes, bad options)."""
        if self.workdir is None:
            return ""
        parts = []
        log = self.workdir / "server.log"
        if log.is_file():
            text = log.read_text(errors="replace").splitlines()
            errors = [
                f"{line}\n{text[i + 1] if i + 1 < len(text) and not text[i + 1].startswith('[') else ''}".rstrip()
                for i, line in enumerate(text)
                if " ERROR " in line or " FATAL " in line
            ]
            if errors:
                parts.append("--- server.log: first errors\n" + "\n".join(errors[:5]))
            parts.append(f"--- server.log: last {lines} lines\n" + "\n".join(text[-lines:]))
        out = self.workdir / "stdout.log"
        if out.is_file() and out.stat().st_size:
            parts.append(f"--- JVM stdout/stderr\n{_tail_lines(out.read_text(errors='replace'), lines)}")
        return "\n".join(parts)

    # -- lifecycle

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> KafkaBroker:
        """Format fresh storage, launch the JVM and wait until the broker serves clients (see _wait_ready)."""
        if self.process is not None:
            raise KafkaSetupError("the broker is already started")
        java = _require_java()
        libs = self.libs or install()
        # picked ports can be taken by someone else before the JVM binds them: retry with new ones
        attempts = 1 if (self.requested_port or self.requested_controller_port) else 3
        for attempt in range(attempts):
            try:
                self._start_once(java, libs)
                return self
            except KafkaSetupError as exc:
                self.stop()
                if "Address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
            except BaseException:  # Ctrl-C, a tool's timeout, ...: no JVM or temp dir left behind
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _start_once(self, java: str, libs: Path) -> None:
        free = iter(_free_ports(2))
        self.port = self.requested_port or next(free)
        self.controller_port = self.requested_controller_port or next(free)
        self.cluster_id = _random_cluster_id()
        self.workdir = Path(tempfile.mkdtemp(prefix="tailsample-kafka-"))
        properties = self.workdir / "server.properties"
        properties.write_text(self._server_properties())
        log4j = self.workdir / "log4j.properties"
        log4j.write_text(self._log4j_properties())
        (self.workdir / "tools-log4j.properties").write_text(TOOLS_LOG4J)
        classpath = f"{libs}/*"  # the JVM expands the wildcard itself
        log_opt = f"-Dlog4j.configuration={log4j.as_uri()}"

        format_cds = _ClassDataArchive(java, libs, "storage-tool")
        fmt = subprocess.run(
            [java, *TOOL_JVM_OPTS, *format_cds.jvm_options(), self._tools_log_opt(), "-cp", classpath,
             STORAGE_TOOL, "format", "-t", self.cluster_id, "-c", str(properties)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        format_cds.finish(exited_normally=fmt.returncode == 0)
        if fmt.returncode != 0:
            raise KafkaSetupError(f"{STORAGE_TOOL} format failed (exit {fmt.returncode}):\n{fmt.stdout}{fmt.stderr}")

        self._cds = _ClassDataArchive(java, libs, "broker")
        jvm_opts = [
            f"-Xmx{self.heap}", f"-Xms{self.heap}",
            # the GC settings of Kafka's own bin/kafka-server-start.sh
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
        ]  # fmt: skip
        # a session of its own: Ctrl-C in the terminal reaches Python, which then stops the broker cleanly
        on_main_thread = threading.current_thread() is threading.main_thread()
        # PDEATHSIG fires when the *thread* that forked exits, so only tie the JVM to the main thread
        preexec = _parent_death_signal() if on_main_thread else None
        with open(self.workdir / "stdout.log", "wb") as out:
            self.process = subprocess.Popen(
                [java, *jvm_opts, *self._cds.jvm_options(), log_opt, "-cp", classpath, MAIN_CLASS, str(properties)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                start_new_session=True, preexec_fn=preexec,
            )  # fmt: skip
        self._wait_ready()

    def _server_properties(self) -> str:
        assert self.workdir is not None
        seg = 16 * 1024 * 1024
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.workdir / "data",
            "num.partitions": self.num_partitions,
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            # one broker: every internal topic with a single replica
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "min.insync.replicas": 1,
            # the first consumer group would otherwise create 50 partitions of __consumer_offsets (seconds)
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.num.partitions": 1,
            "group.initial.rebalance.delay.ms": 0,
            # small segments and indexes: short-lived data in a temp dir
            "log.segment.bytes": seg,
            "offsets.topic.segment.bytes": seg,
            "transaction.state.log.segment.bytes": seg,
            "log.index.size.max.bytes": 1024 * 1024,
            # the log cleaner allocates its 128 MB dedupe buffer on the heap up front
            "log.cleaner.dedupe.buffer.size": seg,
        }
        props.update(self.extra_config)
        return "".join(f"{key}={value}\n" for key, value in props.items())

    def _log4j_properties(self) -> str:
        assert self.workdir is not None
        # log4j 1.x syntax (reload4j): everything into server.log, nothing on the console
        return (
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={self.workdir / 'server.log'}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.request.logger=WARN\n"
        )

    def _tools_log_opt(self) -> str:
        assert self.workdir is not None
        return f"-Dlog4j.configuration={(self.workdir / 'tools-log4j.properties').as_uri()}"

    def _wait_ready(self) -> None:
        """Until the JVM logs "Kafka Server started" (after the broker is unfenced) and its group and producer id
        coordinators answer on the client port (see _coordinators_ready)."""
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        started = False
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise KafkaSetupError(f"the Kafka broker exited with code {code} while starting\n{self.log_tail()}")
            if not started:
                started = self.log_path.is_file() and READY_LINE in self.log_path.read_text(errors="replace")
            if started and _port_open(self.port) and self._clients_served():
                return
            time.sleep(0.1)
        raise KafkaSetupError(
            f"the Kafka broker did not become ready within {self.startup_timeout:.0f}s on {self.bootstrap}\n"
            f"{self.log_tail()}"
        )

    def _clients_served(self) -> bool:
        try:
            return _coordinators_ready(self.port)
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        """SIGKILL the JVM (a crash, no clean shutdown). The temp dir stays until stop()."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the JVM (clean shutdown, under a second), SIGKILL it after `timeout`, remove the temp dir."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
            if self._cds is not None:
                # 143: the JVM's orderly exit on SIGTERM. A SIGKILLed one (-9) may have left half an archive, and
                # one that failed to start (1) has not loaded the classes worth archiving.
                self._cds.finish(exited_normally=self.process.returncode in (0, 143))
                self._cds = None
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.port = self.controller_port = 0

    # -- topics

    def create_topic(
        self, name: str, partitions: int = 1, *, config: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> None:
        """Create a topic (replication factor 1) and wait until every partition has a leader.
        An existing topic is left alone. Uses confluent-kafka when installed, else the bundled TopicCommand."""
        try:
            import confluent_kafka.admin  # noqa: F401
        except ImportError:
            self._create_topic_with_tool(name, partitions, config=config, timeout=timeout)
        else:
            self._create_topic_with_admin(name, partitions, config=config, timeout=timeout)

    def _create_topic_with_admin(
        self, name: str, partitions: int, *, config: Mapping[str, str] | None, timeout: float
    ) -> None:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
        future = admin.create_topics([topic], operation_timeout=timeout, request_timeout=timeout)[name]
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaSetupError(f"creating topic {name!r} failed: {exc}") from exc
        # the controller has created it; wait until the broker's metadata shows a leader for every partition
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            meta = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
            if meta is not None and meta.error is None and meta.partitions:
                if all(p.leader >= 0 for p in meta.partitions.values()):
                    return
            time.sleep(0.05)
        raise KafkaSetupError(f"topic {name!r} has no leader for every partition after {timeout:.0f}s")

    def _create_topic_with_tool(
        self, name: str, partitions: int, *, config: Mapping[str, str] | None, timeout: float
    ) -> None:
        java = _require_java()
        assert self.workdir is not None
        libs = self.libs or install()
        cmd = [
            java, *TOOL_JVM_OPTS, self._tools_log_opt(), "-cp", f"{libs}/*", TOPIC_TOOL,
            "--bootstrap-server", self.bootstrap, "--create", "--if-not-exists",
            "--topic", name, "--partitions", str(partitions), "--replication-factor", "1",
        ]  # fmt: skip
        for key, value in (config or {}).items():
            cmd += ["--config", f"{key}={value}"]
        cds = _ClassDataArchive(java, libs, "topic-tool")
        cmd[1:1] = cds.jvm_options()
        # TopicCommand waits for the creation to complete (not for the broker's metadata: producers retry)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30, stdin=subprocess.DEVNULL)
        cds.finish(exited_normally=proc.returncode == 0)
        if proc.returncode != 0:
            raise KafkaSetupError(f"{TOPIC_TOOL} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")


# ---------------------------------------------------------------------------------------------------- command line


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill <pid>` of `broker.py run` should stop the broker as cleanly as Ctrl-C does."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Apache Kafka {KAFKA_VERSION} (KRaft) on 127.0.0.1 for tests")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="fetch the broker's jars with mvn into the cache and print the libs directory")
    run = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C")
    run.add_argument("--port", type=int, default=0, help="client (PLAINTEXT) port; default: a free one")
    run.add_argument("--controller-port", type=int, default=0, help="KRaft controller port; default: a free one")
    run.add_argument("--partitions", type=int, default=1, help="num.partitions of auto-created topics")
    run.add_argument("--no-auto-create", action="store_true", help="auto.create.topics.enable=false")
    run.add_argument("--topic", action="append", default=[], metavar="NAME[:PARTITIONS]", help="create a topic")
    args = parser.parse_args(argv)

    try:
        if args.command == "install":
            print(install())
            return 0
        broker = KafkaBroker(
            port=args.port,
            controller_port=args.controller_port,
            num_partitions=args.partitions,
            auto_create_topics=not args.no_auto_create,
        )
        with _sigterm_as_interrupt():
            try:
                began = time.monotonic()
                broker.start()
                for spec in args.topic:
                    name, _, count = spec.partition(":")
                    broker.create_topic(name, int(count or args.partitions))
                print(f"Kafka {KAFKA_VERSION} ready in {time.monotonic() - began:.1f}s: bootstrap {broker.bootstrap}")
                print(f"log: {broker.log_path}  (Ctrl-C to stop)", flush=True)
                assert broker.process is not None
                code = broker.process.wait()
                print(f"the broker exited by itself with code {code}\n{broker.log_tail()}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("stopping", file=sys.stderr)
                return 0
            finally:
                broker.stop()
    except KafkaSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
