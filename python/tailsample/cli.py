"""The `tailsample` command: check-config, replay, demo, serve.

Exit codes: 0 success; 2 bad usage or invalid configuration; 1 any other failure (an unreadable input, say).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Column, Table

from tailsample import __version__
from tailsample.config import Config
from tailsample.errors import ConfigError, TailsampleError


def _load(path: str, name: str | None) -> Config:
    return Config.from_file(path, name=name)


def _check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.file, args.name)
    console = Console()
    from tailsample.config import parse_yaml, read_config_text

    data, _ = parse_yaml(read_config_text(args.file), args.file)
    if isinstance(data, dict) and "service" in data:  # a whole collector config: what `serve` would run
        from tailsample.collector.settings import ServiceConfig
        from tailsample.collector.tls import check_config_files

        service = ServiceConfig.from_file(args.file)
        problems = check_config_files(service)
        if problems:  # every failing file at once: a certificate rollout often breaks several
            for problem in problems[:-1]:
                print(f"tailsample: invalid configuration: {args.file}: {problem}", file=sys.stderr)
            raise ConfigError(f"{args.file}: {problems[-1]}", path=problems[-1].path)
        console.print(f"[green]ok[/]: {args.file}: serve config: receivers {', '.join(service.receivers)}; "
                      f"exporters {', '.join(service.exporters)}; pipelines {', '.join(service.pipelines)}")
        for line in service.ignored:
            console.print(f"[yellow]note[/]: {line}")
    n = cfg.normalized()
    if args.traffic or args.url:
        return _lint_policies(args, cfg)
    console.print(f"[green]ok[/]: {args.file}: {len(cfg.policy_names)} policies, decision_wait "
                  f"{n['decision_wait']}, num_traces {n['num_traces']}")
    table = Table("#", "policy", "type", box=None)
    for i, p in enumerate(n["policies"]):
        table.add_row(str(i), p["name"], p["type"])
    console.print(table)
    return 0


def _lint_policies(args: argparse.Namespace, cfg: Config) -> int:
    """`check-config --traffic FILE…` / `--url URL`: the policies' attribute keys against real traffic."""
    import io
    import json

    from tailsample.incident.lint import AttributeInventory, lint, render_text, strict_matching

    if bool(args.traffic) == bool(args.url):
        print("tailsample check-config: give --traffic FILE…, or --url of a running service (not both)",
              file=sys.stderr)
        return 2
    if args.traffic:
        from tailsample.collector.fileformat import read_payloads
        from tailsample.errors import DecodeError
        from tailsample.traffic.replay import replay

        inventory = AttributeInventory()
        for f in args.traffic:
            for i, payload in enumerate(read_payloads(Path(f))):
                try:
                    inventory.add_payload(payload)
                except DecodeError as exc:
                    print(f"tailsample: {f}: payload {i + 1}: {exc}", file=sys.stderr)
                    return 1
        report = replay(cfg, [Path(f) for f in args.traffic], None, progress=False,
                        console=Console(file=io.StringIO()))
        result = lint(cfg, inventory, report.policies)
    else:
        base = args.url.rstrip("/")
        try:
            doc = _get_json(f"{base}/debug/attributes", args, args.url)
        except _ServiceUnreachable as exc:
            print(f"tailsample: {exc}", file=sys.stderr)
            return 1
        pipelines: dict[str, Any] = doc.get("pipelines", {})
        if not pipelines:
            print(f"tailsample: {args.url} runs no traces pipeline", file=sys.stderr)
            return 1
        # The pipeline whose policies are these (by normalized definition), else the first: its traffic sample,
        # and its per-policy counts only for policies defined exactly as here.
        mine = {p["name"]: p for p in cfg.normalized()["policies"]}
        pid, data = max(pipelines.items(), key=lambda kv: sum(
            mine.get(p["name"]) == p for p in kv[1].get("policies", [])))
        running = {p["name"]: p for p in data.get("policies", [])}
        same_rules = data.get("strict_reference_matching", False) == strict_matching(cfg)
        stats = {name: s for name, s in data.get("policy_stats", {}).items()
                 if same_rules and running.get(name) == mine.get(name)}
        inventory = AttributeInventory.from_json(data["inventory"])
        result = lint(cfg, inventory, stats)
        if len(pipelines) > 1:
            print(f"(traffic sampled by pipeline {pid} of {args.url})", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render_text(result))
    return 1 if args.fail_on_miss and result["problems"] else 0


def _replay(args: argparse.Namespace) -> int:
    from tailsample.traffic.replay import replay

    if args.to_kafka:
        return _replay_to_kafka(args)
    cfg = _load(args.config, args.name) if args.config else Config.default()
    output = None if args.output is None else Path(args.output)
    report = replay(cfg, [Path(p) for p in args.inputs], output, fmt=args.format, out_fmt=args.output_format,
                    clock=args.clock, progress=not args.no_progress)
    return 0 if report.payloads_rejected == 0 or args.allow_rejected else 1


def _simulate(args: argparse.Namespace) -> int:
    import tempfile

    from tailsample.traffic.simulate import simulate, write_recording

    if bool(args.inputs) == bool(args.url):
        print("tailsample simulate: give recorded files, or --url for a running service's recent traffic "
              f"({'not both' if args.inputs else 'one of them'})", file=sys.stderr)
        return 2
    cfg = _load(args.config, args.name)  # both configurations load before any download
    against = _load(args.against, args.name) if args.against else None
    inputs = [Path(p) for p in args.inputs]
    fmt = args.format
    with tempfile.TemporaryDirectory(prefix="tailsample-simulate-") as tmp:
        if args.url:
            try:
                recordings = [_fetch_recording(u, args) for u in args.url]
            except _ServiceUnreachable as exc:
                print(f"tailsample: {exc}", file=sys.stderr)
                return 1
            path = Path(args.save) if args.save else Path(tmp) / "recent-traffic.binpb"
            summary = write_recording(recordings, path)
            if summary["payloads"] == 0:
                print(f"tailsample simulate: {', '.join(args.url)}: the recent traffic recording is empty (no "
                      "requests received" + (f" in the last {args.since:g}s" if args.since is not None else
                                              " since the start, or all pushed out") + ")", file=sys.stderr)
                return 1
            print(f"recent traffic of {', '.join(args.url)}: {summary['payloads']:,} requests, "
                  f"{summary['bytes']:,} bytes, received over {summary['seconds']:,.1f}s"
                  + (f"; saved to {path}" if args.save else ""), file=sys.stderr)
            inputs, fmt = [path], "proto"
        report = simulate(cfg, inputs, against=against, fmt=fmt,
                          json_out=Path(args.json) if args.json else None,
                          picture=Path(args.picture) if args.picture else (
                              Path(args.json).with_suffix(".svg") if args.json else None),
                          progress=not args.no_progress,
                          slow_seconds=args.slow)
    return 0 if report["rejected_payloads"] == 0 or args.allow_rejected else 1


def _fetch_recording(url: str, args: argparse.Namespace) -> list[tuple[int, bytes]]:
    """The recent traffic recording of the service at `url` (`GET /debug/traffic`): (receive time ns, payload)."""
    import urllib.parse

    from tailsample.service.debug import RECORDING_CONTENT_TYPE, decode_records

    base = url.rstrip("/")
    query = {k: v for k, v in (("since", args.since), ("pipeline", args.pipeline)) if v is not None}
    target = f"{base}/debug/traffic" + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def parse(status: int, content_type: str | None, raw: bytes) -> list[tuple[int, bytes]]:
        if (content_type or "").split(";")[0].strip() != RECORDING_CONTENT_TYPE:
            raise _ServiceUnreachable(_not_tailsample(target, base, status, content_type, raw))
        try:
            return decode_records(raw, target)
        except ValueError as exc:
            raise _ServiceUnreachable(str(exc)) from None

    records: list[tuple[int, bytes]] = _get(target, args, base, parse)
    return records


def _diff(args: argparse.Namespace) -> int:
    import json

    from tailsample.collector.compare import render_lines

    url = (args.url or DEFAULT_SERVICE_URL).rstrip("/")
    try:
        doc = _get_json(f"{url}/debug/shadow?examples={args.examples}", args, url)
    except _ServiceUnreachable as exc:
        print(f"tailsample: {exc}", file=sys.stderr)
        return 1
    pipelines: dict[str, Any] = doc.get("pipelines", {})
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    shown = {pid: r for pid, r in pipelines.items() if r is not None}
    if not shown:
        print("tailsample diff: no pipeline of this service has shadow policies (processors.tail_sampling."
              "tailsample.shadow.policies; README: Shadow policies)", file=sys.stderr)
        return 1
    for pid, report in shown.items():
        if len(pipelines) > 1:
            print(f"[pipeline {pid}]")
        print("\n".join(render_lines(report)))
        for key, label in (("live_only", "kept by live only"), ("shadow_only", "kept by shadow only")):
            ex = report["examples"][key]
            if ex:
                print(f"  e.g. {label}: {', '.join(ex)}")
    return 0


def _replay_to_kafka(args: argparse.Namespace) -> int:
    """Recorded traffic into a Kafka topic, unsampled, as the collector's Kafka exporter writes it."""
    from tailsample.collector.fileformat import read_payloads
    from tailsample.collector.kafka import client_config, confluent_kafka, produce_all
    from tailsample.collector.settings import KafkaClient

    conf = client_config(KafkaClient(brokers=tuple(b.strip() for b in args.to_kafka.split(",") if b.strip()),
                                     client_id="tailsample-replay"))
    producer = confluent_kafka().Producer({**conf, "linger.ms": 20})
    payloads = (p for f in args.inputs for p in read_payloads(Path(f), args.format))
    sent = produce_all(producer, args.topic, payloads, by_trace=not args.whole_payloads)
    print(f"{sent:,} messages written to {args.topic!r} at {args.to_kafka}"
          + ("" if args.whole_payloads else " (one trace per message, keyed by trace ID)"), file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tailsample.traffic.demo import run_demo

    cfg = _load(args.config, args.name) if args.config else None
    report = run_demo(seconds=args.seconds, rate=args.rate, seed=args.seed, config=cfg)
    return 0 if report.all_must_keep_kept or args.config else 1


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from tailsample.collector.settings import ServiceConfig, parse_duration
    from tailsample.service.app import Service

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        timeout = parse_duration(args.shutdown_timeout)
    except ValueError:
        raise ConfigError(f"--shutdown-timeout: invalid duration {args.shutdown_timeout!r}") from None
    if args.config is None:
        from importlib.resources import files

        default = files("tailsample") / "data" / "serve-config.yaml"
        config = ServiceConfig.from_yaml(default.read_text(), source="(bundled serve-config.yaml)")
    else:
        config = ServiceConfig.from_file(args.config)
    service = Service(config, shutdown_timeout=timeout, config_path=Path(args.config) if args.config else None,
                      watch_config=args.watch_config)
    try:
        asyncio.run(service.run())
    except (OSError, RuntimeError) as exc:  # an address in use, a certificate that does not load
        # an OSError's own words, without its "[Errno 98]" prefix
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"tailsample: cannot serve: {reason}", file=sys.stderr)
        return 1
    return 0


def _bench(args: argparse.Namespace) -> int:
    from tailsample.collector.settings import parse_duration
    from tailsample.traffic.bench import run_bench, seed_config, write_json

    if args.config:
        config = _load(args.config, args.name)
    else:
        parse_duration(args.decision_wait)  # a clear error before minutes of generation
        config = seed_config(decision_wait=args.decision_wait, num_traces=1_000_000)
    report = run_bench(seconds=args.seconds, rate=None if args.flat_out else args.rate, config=config,
                       seed=args.seed)
    if args.json:
        write_json(report, Path(args.json), memory_path=Path(args.memory_json) if args.memory_json else None)
    return 0


def _trace_id_arg(text: str) -> str:
    tid = text.strip().lower()
    if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
        raise argparse.ArgumentTypeError(f"{text!r} is not a trace ID (32 hex digits)")
    return tid


def _seconds_arg(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        n = -1.0
    if not 0 <= n < 1e9:  # NaN and inf too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return n


def _limit_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of traces (0 or more)")
    return n


# Where `explain`, `gaps` and `show --url` find a running `tailsample serve`: its telemetry metrics endpoint.
DEFAULT_SERVICE_URL = "http://127.0.0.1:8888"


# The bearer token of the service's /debug endpoints (extensions.tailsample_debug.auth), when not given as --token.
TOKEN_ENV = "TAILSAMPLE_TOKEN"


def _timeout_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the service (default 5)")
    p.add_argument("--token", help="with --url: the bearer token of the service's /debug endpoints (the "
                   "tailsample_debug extension's authenticator; sent as 'Authorization: Bearer TOKEN', or as given "
                   f"when it holds a space); default: ${TOKEN_ENV}")


def _auth_header(args: argparse.Namespace) -> str | None:
    import os

    token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None
    if token is None:
        return None
    return token if " " in token.strip() else f"Bearer {token.strip()}"


class _ServiceUnreachable(Exception):
    """A running service could not answer (the message says why, for stderr)."""


def _get_json(url: str, args: argparse.Namespace, service: str) -> Any:
    """GET a JSON document from a running `tailsample serve` (with `--token` when given); HTTP errors come back
    as their JSON body's message, the /debug endpoints being off or refusing the token said plainly."""
    import json

    def parse(status: int, content_type: str | None, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise _ServiceUnreachable(_not_tailsample(url, service, status, content_type, raw)) from None

    return _get(url, args, service, parse)


def _get(url: str, args: argparse.Namespace, service: str, parse: Callable[[int, str | None, bytes], Any]) -> Any:
    """GET `url` from a running `tailsample serve`; `parse(status, content type, body)` reads a 2xx answer
    (raising `_ServiceUnreachable` when it is not what the service would answer)."""
    import urllib.request

    return _request(urllib.request.Request(url), url, args, service, parse)


def _request(request: Any, url: str, args: argparse.Namespace, service: str,
             parse: Callable[[int, str | None, bytes], Any]) -> Any:
    """Sends `request` (a `urllib.request.Request`) to a running `tailsample serve` with the bearer token if one is
    given; a 2xx answer goes to `parse`, an error becomes one `_ServiceUnreachable` line that names the cause."""
    import json
    import urllib.error
    import urllib.request

    header = _auth_header(args)
    if header is not None:
        request.add_header("Authorization", header)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as resp:
            return parse(resp.status, resp.headers.get("Content-Type"), resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        text = raw.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            # tailsample's endpoints answer errors in JSON: anything else is another server
            raise _ServiceUnreachable(_not_tailsample(url, service, exc.code, exc.headers.get("Content-Type"),
                                                      raw)) from None
        detail = body.get("error", text) if isinstance(body, dict) else text
        if exc.code == 404 and isinstance(body, dict) and body.get("disabled"):
            raise _ServiceUnreachable(f"{service}: {detail}") from None
        if exc.code == 401:
            given = "the token given was refused" if header else f"give it with --token or ${TOKEN_ENV}"
            raise _ServiceUnreachable(f"{service}: its /debug endpoints need a bearer token ({given})") from None
        raise _ServiceUnreachable(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _ServiceUnreachable(f"cannot reach a tailsample service at {service} ({exc}); is `tailsample serve` "
                                  "running, and is this its telemetry metrics address?") from None


def _not_tailsample(url: str, service: str, status: int, content_type: str | None, body: bytes) -> str:
    """What a server that is not `tailsample serve` answered, in a line: its status, content type and, for
    HTML, the page's title, never the page itself."""
    import re

    text = body[:4096].decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    if title:
        what = f"an HTML page titled {' '.join(title[1].split())[:80]!r}"
    elif "<html" in text.lower() or (content_type or "").startswith("text/html"):
        what = "an HTML page"
    else:
        first = " ".join(text.split())[:80]
        what = f"{content_type or 'no content type'}: {first!r}" if first else "an empty body"
    return (f"{url}: HTTP {status}, {what}, not JSON: {service} does not look like a tailsample service's "
            "telemetry metrics address (service.telemetry.metrics.address of `tailsample serve`, default "
            f"{DEFAULT_SERVICE_URL})")


def _lookback_arg(text: str) -> float:
    from tailsample.collector.settings import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 30m, 1h, 24h)")
    return seconds


def _bytes_arg(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        n = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in bytes (e.g. 256MiB)")
    return n


def _backend_args(p: argparse.ArgumentParser, *, limit: bool) -> None:
    from tailsample.incident.backends import DEFAULT_LIMIT

    p.add_argument("--jaeger", metavar="URL", help="read stored traces from Jaeger's query service (v2, HTTP API "
                   "v3), e.g. http://127.0.0.1:16686")
    p.add_argument("--tempo", metavar="URL", help="read stored traces from Tempo's HTTP API, e.g. "
                   "http://127.0.0.1:3200 (its documented API; untested against a running Tempo)")
    p.add_argument("--service", action="append", default=[], metavar="NAME", help="with --jaeger: traces with a "
                   "span of this service (repeatable; default: every service Jaeger knows)")
    p.add_argument("--lookback", type=_lookback_arg, default=3600.0, metavar="DURATION", help="with --jaeger: "
                   "traces started in the last DURATION (default 1h)")
    if limit:
        p.add_argument("--limit", type=_limit_arg, default=DEFAULT_LIMIT, metavar="N", help="with --jaeger: at "
                       f"most N traces in all (default {DEFAULT_LIMIT})")
    p.add_argument("--max-bytes", type=_bytes_arg, default=256 << 20, metavar="SIZE", help="with --jaeger: stop "
                   "with an error past SIZE read from the backend (default 256MiB)")


def _store_url(args: argparse.Namespace) -> str | None:
    """The URL of the trace store asked for (--jaeger or --tempo), if any."""
    return args.jaeger or getattr(args, "tempo", None)


def _store(args: argparse.Namespace) -> Any:
    from tailsample.incident.backends import JaegerClient, TempoClient

    if args.jaeger:
        return JaegerClient(args.jaeger, timeout=args.timeout, max_bytes=args.max_bytes)
    return TempoClient(args.tempo, timeout=args.timeout, max_bytes=args.max_bytes)


def _pull_store(args: argparse.Namespace, limit: int) -> Any:
    """The stored traces `--jaeger/--tempo --service --lookback` select, at most `limit`; a note on stderr if
    the limit stopped the pull."""
    from tailsample.incident.backends import pull

    client = _store(args)
    pulled = pull(client, services=args.service, lookback=args.lookback, limit=limit)
    if pulled.limited:
        print(f"tailsample: stopped at {limit:,} traces (--limit); more may match in {client.name}",
              file=sys.stderr)
    return pulled


def _sources_error(args: argparse.Namespace, command: str, exactly_one: bool) -> int | None:
    given = sum(map(bool, (args.files, args.url, args.jaeger, getattr(args, "tempo", None))))
    if given > 1 or (exactly_one and given == 0):
        print(f"tailsample {command}: give OTLP files, --url of a running service, --jaeger URL or --tempo URL "
              "(one of them)", file=sys.stderr)
        return 2
    return None


def _show(args: argparse.Namespace) -> int:
    import json
    import os
    import shutil

    from tailsample.collector.fileformat import json_to_proto, read_payloads
    from tailsample.incident.backends import BackendError
    from tailsample.incident.tree import build_traces, rank_traces, render_list, render_text, summary_json, to_json

    if (code := _sources_error(args, "show", exactly_one=True)) is not None:
        return code
    base = (args.url or "").rstrip("/")
    try:
        if args.files:
            source = ", ".join(args.files)
            traces = build_traces((p for f in args.files for p in read_payloads(Path(f))), attributes=args.attr)
        elif _store_url(args) and args.trace_id is not None:
            client = _store(args)
            source = client.where
            payload = client.trace(args.trace_id)
            traces = build_traces([payload] if payload is not None else [], attributes=args.attr)
        elif _store_url(args):
            pulled = _pull_store(args, max(1, args.limit))
            source = f"{_store(args).where} (last {_seconds_text(args.lookback)})"
            traces = build_traces(pulled.payloads(), attributes=args.attr)
        elif args.trace_id is not None:
            source = f"the recently kept traces of {args.url}"
            doc = _get_json(f"{base}/debug/kept/{args.trace_id}", args, args.url)
            traces = build_traces([json_to_proto(doc)], attributes=args.attr)
        else:
            source = f"the recently kept traces of {args.url}"
            listing = _get_json(f"{base}/debug/kept?limit={max(1, args.limit)}", args, args.url)
            newest = [row for rows in listing.get("pipelines", {}).values() for row in rows]
            newest.sort(key=lambda r: -float(r.get("decided_at", 0)))
            if not newest:
                print(f"tailsample: no kept traces held by {args.url} yet", file=sys.stderr)
                return 1
            doc = _get_json(f"{base}/debug/kept/{newest[0]['trace_id']}", args, args.url)
            traces = build_traces([json_to_proto(doc)], attributes=args.attr)
    except (_ServiceUnreachable, BackendError) as exc:
        print(f"tailsample: {exc}", file=sys.stderr)
        return 1
    if args.trace_id is not None:
        tree = traces.get(args.trace_id)
        if tree is None:
            print(f"tailsample: trace {args.trace_id} not found in {source}", file=sys.stderr)
            return 1
        ranked = [tree]
    else:
        ranked = rank_traces(traces.values())
        if not ranked:
            print(f"tailsample: no spans in {source}", file=sys.stderr)
            return 1
    if args.url and args.trace_id is None:
        # The listing came from the service (newest first); the tree is the newest trace's.
        listed: list[dict[str, Any]] = newest[:args.limit]
    else:
        listed = [summary_json(t) for t in ranked[:args.limit]]
    if args.json:
        out = to_json(ranked[0])
        if args.trace_id is None:
            out = {"trace_count": len(newest) if args.url else len(ranked), "traces": listed, "trace": out}
        try:
            text = json.dumps(out, indent=2, ensure_ascii=False)
        except RecursionError:  # json nests as deep as the trace: thousands of levels exceed Python's stack
            print(f"tailsample: trace {ranked[0].trace_id} is nested too deep for JSON output", file=sys.stderr)
            return 1
        print(text)
        return 0
    tty = sys.stdout.isatty()
    color = tty and "NO_COLOR" not in os.environ
    width = shutil.get_terminal_size().columns if tty else None
    if args.trace_id is None and args.limit > 0:
        if args.url:
            print(f"{len(listed):,} recently kept traces held by {args.url}, newest first:")
            for row in listed:
                print(f"  {row['trace_id']}  {row.get('span_count', 0):>5} spans  {row.get('duration', '')}")
        elif len(ranked) > 1:
            print(f"{len(ranked):,} traces in {source}, most spans first:")
            print(render_list(ranked, limit=args.limit))
    sys.stdout.write(render_text(ranked[0], width=width, color=color))
    return 0


def _seconds_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _stored_answer(args: argparse.Namespace) -> dict[str, Any]:
    """What the store holds of the trace: found or not, spans, services, errors, calls whose callee never
    joined."""
    from tailsample.incident.tree import build_traces, summary_json

    client = _store(args)
    payload = client.trace(args.trace_id)
    tree = build_traces([payload]).get(args.trace_id) if payload is not None else None
    answer: dict[str, Any] = {"backend": client.name.lower(), "url": client.url, "trace_id": args.trace_id,
                              "found": tree is not None}
    if tree is not None:
        answer["trace"] = summary_json(tree)
    return answer


def _describe_stored(answer: dict[str, Any]) -> list[str]:
    name = "Jaeger" if answer["backend"] == "jaeger" else "Tempo"
    where = f"{name} at {answer['url']}"
    if not answer["found"]:
        return [f"trace {answer['trace_id']}: not in {where} (never stored: not kept, or not exported yet; or "
                "past its retention)"]
    t = answer["trace"]
    services = t["services"]
    lines = [f"trace {answer['trace_id']}: stored in {where}: {t['span_count']:,} spans, {len(services)} "
             f"service{'s' if len(services) != 1 else ''} ({', '.join(services)}), {t['duration']}"]
    facts = []
    if t["errors"]:
        facts.append(f"{t['errors']} error span{'s' if t['errors'] != 1 else ''}")
    if t["unanswered_calls"]:
        facts.append(f"{t['unanswered_calls']} call{'s' if t['unanswered_calls'] != 1 else ''} whose callee "
                     "never joined")
    if t["broken"]:
        facts.append(f"broken: {t['root_count']} roots, {t['orphans']} orphan spans")
    if facts:
        lines.append("  " + "; ".join(facts))
    lines.append(f"  tailsample show --{answer['backend']} {answer['url']} --trace-id {answer['trace_id']}   "
                 "draws it")
    return lines


def _explain(args: argparse.Namespace) -> int:
    import json

    from tailsample.incident.backends import BackendError
    from tailsample.incident.explain import describe

    if args.jaeger and args.tempo:
        print("tailsample explain: give --jaeger or --tempo (not both)", file=sys.stderr)
        return 2
    url = args.url or (None if _store_url(args) else DEFAULT_SERVICE_URL)
    doc: dict[str, Any] | None = None
    stored: dict[str, Any] | None = None
    try:
        if url is not None:
            doc = _get_json(f"{url.rstrip('/')}/debug/traces/{args.trace_id}", args, url)
        if _store_url(args):
            stored = _stored_answer(args)
    except (_ServiceUnreachable, BackendError) as exc:
        print(f"tailsample: {exc}", file=sys.stderr)
        return 1
    if args.json:
        if stored is not None and doc is not None:
            print(json.dumps({"service": doc, "stored": stored}, indent=2, ensure_ascii=False))
        else:
            print(json.dumps(doc if doc is not None else stored, indent=2, ensure_ascii=False))
        return 0
    if doc is not None:
        pipelines: dict[str, dict[str, object]] = doc.get("pipelines", {})
        for pid, answer in pipelines.items():
            if len(pipelines) > 1:
                print(f"[pipeline {pid}]")
            print("\n".join(describe(answer)))
    if stored is not None:
        print("\n".join(_describe_stored(stored)))
    return 0


def _post_json(url: str, body: Any, args: argparse.Namespace, service: str) -> Any:
    """POST a JSON body to a running `tailsample serve`; the answer's JSON, errors as `_get` says them."""
    import json
    import urllib.request

    def parse(status: int, content_type: str | None, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise _ServiceUnreachable(_not_tailsample(url, service, status, content_type, raw)) from None

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    return _request(request, url, args, service, parse)


def _recover_from_services(args: argparse.Namespace, ids: list[str], export: bool) -> tuple[list[Any], list[str]]:
    """Asks every --url; returns what came back (as Recovered, payloads only when not exported) and the errors."""
    import base64

    from tailsample.archive import Recovered

    got: list[Recovered] = []
    errors: list[str] = []
    for url in args.url:
        base = url.rstrip("/")
        try:
            doc = _post_json(f"{base}/debug/recover", {"trace_ids": ids, "export": export}, args, url)
        except _ServiceUnreachable as exc:
            errors.append(str(exc))
            continue
        pipelines = doc.get("pipelines", {}) if isinstance(doc, dict) else {}
        if pipelines and not any(p.get("archive") for p in pipelines.values()):
            errors.append(f"{url}: no pipeline has an archive (configure tailsample.archive)")
        for pid, p in pipelines.items():
            for row in p.get("found", []):
                payload = base64.b64decode(row["payload"]) if "payload" in row else b""
                got.append(Recovered(row["trace_id"], float(row["archived_at"]), payload))
                if export:
                    print(f"trace {row['trace_id']}: recovered by {url} ({pid}): {row.get('spans', 0)} spans sent "
                          "to the pipeline's exporters, marked tailsample.recovered")
    return got, errors


def _scan_services(args: argparse.Namespace, since: float, until: float) -> Any:
    """`recover --since` against running services: each scans its own archive; None when none could."""
    from tailsample.archive import Found, ScanResult

    traces: list[Found] = []
    spans = 0
    problems: list[str] = []
    truncated = False
    answered = False
    for url in args.url:
        body = {"since": since, "until": until, "where": args.where, "limit": args.limit}
        try:
            doc = _post_json(f"{url.rstrip('/')}/debug/recover", body, args, url)
        except _ServiceUnreachable as exc:
            print(f"tailsample: {exc}", file=sys.stderr)
            continue
        for p in (doc.get("pipelines", {}) if isinstance(doc, dict) else {}).values():
            if not p.get("archive"):
                continue
            answered = True
            spans += int(p.get("spans", 0))
            problems += [f"{url}: {x}" for x in p.get("problems", [])]
            truncated |= bool(p.get("truncated"))
            traces += [Found(t["trace_id"], float(t["archived_at"]), b"", int(t["spans"]), str(t["root_name"]),
                             float(t["start"]), float(t["duration"]), bool(t["error"])) for t in p.get("traces", [])]
    if not answered:
        print("tailsample: no service answered with an archive (configure tailsample.archive)", file=sys.stderr)
        return None
    return ScanResult(traces, spans, problems, truncated)


def _print_trees(recovered: Sequence[Any]) -> None:
    import os
    import shutil

    from tailsample.incident.tree import build_traces, render_text

    tty = sys.stdout.isatty()
    color = tty and "NO_COLOR" not in os.environ
    width = shutil.get_terminal_size().columns if tty else None
    for tree in build_traces(r.payload for r in recovered).values():
        sys.stdout.write(render_text(tree, width=width, color=color))


def _recover(args: argparse.Namespace) -> int:
    import time

    from rich.progress import Progress

    from tailsample.archive import ArchiveReader, Recovered, parse_trace_id
    from tailsample.incident.recover import NOT_FOUND, missing, parse_when, table_rows, write_output

    scanning = args.since is not None or args.until is not None or args.where is not None
    if scanning and args.trace_ids:
        print("tailsample: recover takes trace IDs or --since/--until/--where, not both", file=sys.stderr)
        return 2
    if not scanning and not args.trace_ids:
        print("tailsample: recover needs trace IDs, or --since (with --archive) to scan by time and content",
              file=sys.stderr)
        return 2
    try:
        ids = [parse_trace_id(t).hex() for t in args.trace_ids]
    except ValueError as exc:
        print(f"tailsample: {exc}", file=sys.stderr)
        return 2
    if args.archive is None and not args.url:
        args.url = [DEFAULT_SERVICE_URL]
    recovered: list[Recovered] = []
    if scanning:
        now = time.time()
        try:
            since = parse_when(args.since or "24h", now)
            until = parse_when(args.until or "now", now)
        except ValueError as exc:
            print(f"tailsample: {exc}", file=sys.stderr)
            return 2
        started = time.perf_counter()
        if args.archive is not None:
            result = ArchiveReader(args.archive).scan(since, until, args.where, args.limit)
        else:
            result = _scan_services(args, since, until)
            if result is None:
                return 1
        took = time.perf_counter() - started
        for problem in result.problems:
            print(f"tailsample: warning: {problem}", file=sys.stderr)
        more = f" (the first {args.limit:,}: --limit)" if result.truncated else ""
        print(f"{len(result.traces):,} dropped traces ({result.spans:,} spans) archived from "
              f"{time.strftime('%H:%M:%S', time.gmtime(since))} to {time.strftime('%H:%M:%S', time.gmtime(until))} "
              f"UTC" + (f" where {args.where}" if args.where else "") + f"{more}, scanned in {took:.2f} s")
        if not result.traces:
            return 1
        # The trace ID whole (it is what a person copies into `recover`), whatever the terminal's width.
        table = Table(Column("trace ID", no_wrap=True, min_width=32), "root span", "spans", "duration", "status",
                      "archived")
        for row in table_rows(result.traces):
            table.add_row(*row)
        # Into a pipe or a file: no terminal to fit, so nothing is wrapped.
        Console(width=None if sys.stdout.isatty() else 200).print(table)
        if not args.yes:
            if not sys.stdin.isatty():
                print("tailsample: listed only; recover them with --yes", file=sys.stderr)
                return 0
            answer = input(f"recover these {len(result.traces):,} traces? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                return 0
        found_ids = [f.trace_id for f in result.traces]
        if args.output is None and args.url:
            with Progress(transient=True) as progress:
                task = progress.add_task("recovering", total=len(found_ids))
                for i in range(0, len(found_ids), 100):
                    got, errors = _recover_from_services(args, found_ids[i:i + 100], export=True)
                    for e in errors:
                        print(f"tailsample: {e}", file=sys.stderr)
                    recovered.extend(got)
                    progress.advance(task, min(100, len(found_ids) - i))
        elif args.archive is None:  # --output from services: they return the payloads
            with Progress(transient=True) as progress:
                task = progress.add_task("recovering", total=len(found_ids))
                for i in range(0, len(found_ids), 100):
                    got, errors = _recover_from_services(args, found_ids[i:i + 100], export=False)
                    for e in errors:
                        print(f"tailsample: {e}", file=sys.stderr)
                    recovered.extend(got)
                    progress.advance(task, min(100, len(found_ids) - i))
        else:
            with Progress(transient=True) as progress:
                task = progress.add_task("recovering", total=len(result.traces))
                for f in result.traces:
                    recovered.append(Recovered(f.trace_id, f.archived_at, f.payload))
                    progress.advance(task)
        ids = found_ids
    elif args.archive is not None:
        recovered = ArchiveReader(args.archive).find(ids)
    else:
        got, errors = _recover_from_services(args, ids, export=args.output is None and not args.print)
        for e in errors:
            print(f"tailsample: {e}", file=sys.stderr)
        recovered = got
        if errors and not got:
            return 1
    if args.output is not None:
        n = write_output(args.output, recovered)
        print(f"{n:,} recovered payloads written to {args.output} (the file exporter's JSON format)")
    elif args.archive is not None or args.print:
        _print_trees(recovered)
    lost = missing(ids, recovered)
    for t in lost:
        print(f"trace {t}: {NOT_FOUND}")
    return 1 if lost else 0


def _gaps(args: argparse.Namespace) -> int:
    import json

    from tailsample.collector.fileformat import read_payloads
    from tailsample.engine import GapReport
    from tailsample.incident.backends import BackendError
    from tailsample.incident.gaps import audit_payloads, merge_reports, render_text

    report: GapReport
    if (code := _sources_error(args, "gaps", exactly_one=False)) is not None:
        return code
    if args.files or _store_url(args):
        options: dict[str, Any] = {}
        if args.ignore:
            options["ignore_destinations"] = args.ignore
        if _store_url(args):
            try:
                client = _store(args)
                pulled = _pull_store(args, args.limit)
            except BackendError as exc:
                print(f"tailsample: {exc}", file=sys.stderr)
                return 1
            source = client.where
            if not pulled.traces:
                of = ", ".join(pulled.services) or "any service"
                print(f"tailsample: {source} holds no trace of {of} in the last {_seconds_text(args.lookback)}",
                      file=sys.stderr)
            payloads = pulled.payloads()
        else:
            payloads = (p for f in args.files for p in read_payloads(Path(f)))
            source = ", ".join(args.files)
        # the same audit for stored traces as for files: the engine's, over every trace at once
        report, stats = audit_payloads(payloads, max_traces=args.max_traces, options=options)
        if stats["traces_evicted"]:
            print(f"tailsample: {stats['traces_evicted']:,} traces were not audited: more than --max-traces "
                  f"{args.max_traces:,} traces in {source}", file=sys.stderr)
    else:
        url = args.url or DEFAULT_SERVICE_URL
        try:
            doc = _get_json(f"{url.rstrip('/')}/debug/gaps", args, url)
        except _ServiceUnreachable as exc:
            print(f"tailsample: {exc}", file=sys.stderr)
            return 1
        reports = [r for r in doc.get("pipelines", {}).values() if r is not None]
        if not reports:
            print(f"tailsample: the propagation audit is off in every pipeline of {url} "
                  "(tailsample.propagation_audit.enabled)", file=sys.stderr)
            return 1
        report = merge_reports(reports)
        source = url
    if args.graph:
        from tailsample.incident.graph import write_graph

        fmt = write_graph(report, args.graph, title=f"tailsample service graph: {source}")
        print(f"service graph ({fmt}) written to {args.graph}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(render_text(report, top=args.top))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `tailsample` command."""
    parser = argparse.ArgumentParser(prog="tailsample", description="Tail-based sampling for OpenTelemetry "
                                     "traces: a Rust engine with a Python front.")
    parser.add_argument("--version", action="version", version=f"tailsample {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a collector YAML or a tail_sampling block")
    p.add_argument("file")
    p.add_argument("--name", help="which tail_sampling/<name> processor, when the file has several")
    p.add_argument("--traffic", nargs="+", metavar="FILE", help="lint the policies against recorded OTLP traffic "
                   "(the collector file exporter's formats): traces each policy matched, attribute keys never "
                   "seen, near misses (dash vs underscore, case, string vs array, resource vs span)")
    p.add_argument("--url", help="lint against the traffic a running `tailsample serve` samples (its telemetry "
                   "metrics address, e.g. http://127.0.0.1:8888)")
    p.add_argument("--json", action="store_true", help="with --traffic or --url: print the lint as JSON")
    p.add_argument("--fail-on-miss", action="store_true", help="with --traffic or --url: exit 1 when a key a "
                   "policy reads is missing or a near miss")
    _timeout_arg(p)
    p.set_defaults(run=_check_config)

    p = sub.add_parser("replay", help="run recorded OTLP traffic (the collector file exporter's formats) "
                       "through the engine")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files written by the collector's file exporter "
                   "(json lines or length-prefixed proto, optionally gzipped)")
    p.add_argument("--config", help="collector YAML or tail_sampling block (default: the bundled seed config)")
    p.add_argument("--name", help="which tail_sampling/<name> processor, when the file has several")
    p.add_argument("--output", "-o", help="where kept traces go (same format as the input; '-' for stdout)")
    p.add_argument("--format", choices=["json", "proto"], help="input format (default: detected per file)")
    p.add_argument("--output-format", choices=["json", "proto"], help="output format (default: the input's)")
    p.add_argument("--clock", choices=["event", "wall"], default="event",
                   help="event: decision_wait runs in span time (default); wall: the real clock")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-rejected", action="store_true", help="exit 0 even if some messages were rejected")
    p.add_argument("--to-kafka", metavar="BROKERS", help="instead of sampling: write the traffic to a Kafka topic "
                   "(comma-separated brokers), one trace per message keyed by trace ID, as the collector's Kafka "
                   "exporter with partition_traces_by_id")
    p.add_argument("--topic", default="otlp_spans", help="with --to-kafka: the topic (default otlp_spans)")
    p.add_argument("--whole-payloads", action="store_true", help="with --to-kafka: one message per recorded payload, "
                   "unkeyed, instead of one per trace")
    p.set_defaults(run=_replay)

    p = sub.add_parser("simulate", help="what-if: recorded OTLP through configuration A (and B): traces, spans "
                       "and bytes each keeps, traces kept by one side only, must-keep traces one side loses")
    p.add_argument("inputs", nargs="*", metavar="FILE", help="files written by the collector's file exporter "
                   "(json lines or length-prefixed proto, optionally gzipped); or --url")
    p.add_argument("--url", action="append", metavar="URL", help="instead of files: the recent incoming traffic "
                   "of a running `tailsample serve` (its telemetry metrics address; the tailsample_debug "
                   "extension's recent_traffic_bytes); repeat for each instance of a scaled-out deployment, "
                   "merged by receive time")
    p.add_argument("--since", type=_seconds_arg, metavar="SECONDS", help="with --url: only the requests received "
                   "in the last SECONDS (default: all the service holds)")
    p.add_argument("--pipeline", help="with --url: which pipeline's traffic, when the service has several")
    p.add_argument("--save", metavar="FILE", help="with --url: keep the merged recording as FILE (the file "
                   "exporter's proto format), for `simulate FILE` later")
    p.add_argument("--config", required=True, help="configuration A: collector YAML or tail_sampling block")
    p.add_argument("--against", help="configuration B, compared trace for trace with A")
    p.add_argument("--name", help="which tail_sampling/<name> processor, when the files have several")
    p.add_argument("--json", metavar="OUT", help="write the comparison as JSON (per configuration traces and "
                   "spans kept, trace IDs kept by one side only)")
    p.add_argument("--picture", metavar="SVG", help="draw kept share and bytes per day per policy, A beside B "
                   "(default: beside --json, with .svg for its suffix)")
    p.add_argument("--slow", type=float, default=1.0, metavar="SECONDS", help="a trace at least this long is in "
                   "the slow must-keep class (default 1)")
    p.add_argument("--format", choices=["json", "proto"], help="input format (default: detected per file)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-rejected", action="store_true", help="exit 0 even if some messages were rejected")
    _timeout_arg(p)
    p.set_defaults(run=_simulate)

    p = sub.add_parser("diff", help="the shadow policies of a running `tailsample serve` beside its live ones: "
                       "traces kept by live only, shadow only, both; spans and bytes per day; must-keep traces lost")
    p.add_argument("--url", help=f"the service's telemetry metrics address (default {DEFAULT_SERVICE_URL})")
    p.add_argument("--examples", type=_limit_arg, default=5, metavar="N", help="example trace IDs per class "
                   "(default 5)")
    p.add_argument("--json", action="store_true", help="print the service's JSON answer")
    _timeout_arg(p)
    p.set_defaults(run=_diff)

    p = sub.add_parser("demo", help="the main job on defaults: synthetic traffic through the seed policies")
    p.add_argument("--seconds", type=float, default=30.0, help="simulated seconds of traffic (default 30)")
    p.add_argument("--rate", type=float, default=50_000, help="offered spans per second (default 50,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--config", help="collector YAML or tail_sampling block (default: the seed config)")
    p.add_argument("--name", help="which tail_sampling/<name> processor, when the file has several")
    p.set_defaults(run=_demo)

    p = sub.add_parser("bench", help="a workload through the engine for a set time: spans/s per core, decision "
                       "lag p50/p99, peak RSS, retained bytes per buffered span")
    p.add_argument("--seconds", type=float, default=15.0, help="how long to offer traffic (default 15)")
    p.add_argument("--rate", type=float, default=200_000, help="offered spans/s, paced on the wall clock "
                   "(default 200,000)")
    p.add_argument("--flat-out", action="store_true", help="ignore --rate: as fast as the engine takes it")
    p.add_argument("--decision-wait", default="2s", help="decision_wait of the seed policies (default 2s)")
    p.add_argument("--config", help="collector YAML or tail_sampling block instead of the seed policies")
    p.add_argument("--name", help="which tail_sampling/<name> processor, when the file has several")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write the figures as JSON to this file")
    p.add_argument("--memory-json", help="with --json: write (buffered traces, retained, raw bytes) samples here")
    p.set_defaults(run=_bench)

    p = sub.add_parser("serve", help="an OTLP service: receive, tail-sample, export (an OpenTelemetry Collector "
                       "config file)")
    p.add_argument("--config", help="the collector YAML (receivers, processors, exporters, extensions, service); "
                   "default: the bundled serve-config.yaml (OTLP on 127.0.0.1:4317/4318, the seed's policies, "
                   "debug exporter)")
    p.add_argument("--shutdown-timeout", default="30s", help="on SIGTERM/SIGINT, how long exporters may drain "
                   "their queues (a Go duration; default 30s)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--watch-config", action="store_true", help="reload the tail_sampling policies when the "
                   "--config file changes (SIGHUP and POST /debug/reload always do)")
    p.set_defaults(run=_serve)

    p = sub.add_parser("show", help="render a kept trace as a tree (from OTLP files): durations, status, key "
                       "attributes, GenAI tokens and calls")
    p.add_argument("files", nargs="*", metavar="FILE", help="files written by the collector's file exporter "
                   "(json lines or length-prefixed proto, optionally gzipped)")
    p.add_argument("--url", help="instead of files: a running service's telemetry metrics address (e.g. "
                   f"{DEFAULT_SERVICE_URL}); shows its recently kept traces, newest first")
    _backend_args(p, limit=False)
    _timeout_arg(p)
    p.add_argument("--trace-id", type=_trace_id_arg, metavar="HEX", help="the trace to render (32 hex digits); "
                   "default: list the traces and render the one with most spans")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--attr", action="append", default=[], metavar="KEY", help="also show this span attribute "
                   "(repeatable)")
    p.add_argument("--limit", type=_limit_arg, default=20, metavar="N", help="list at most N traces (default 20; "
                   "0: no list)")
    p.set_defaults(run=_show)

    p = sub.add_parser("explain", help="ask a running `tailsample serve` whether it kept a trace, and why")
    p.add_argument("trace_id", type=_trace_id_arg, metavar="TRACE_ID", help="32 hex digits")
    p.add_argument("--url", help="the service's telemetry metrics address (service.telemetry.metrics; default "
                   f"{DEFAULT_SERVICE_URL} unless only --jaeger is given)")
    p.add_argument("--jaeger", metavar="URL", help="also (or, without --url, only) ask Jaeger's query service "
                   "whether it stores the trace: spans, services, errors, calls whose callee never joined")
    p.add_argument("--tempo", metavar="URL", help="the same, asking Tempo's HTTP API")
    p.add_argument("--max-bytes", type=_bytes_arg, default=64 << 20, metavar="SIZE", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the JSON answer (both under service/stored with "
                   "--url and --jaeger)")
    _timeout_arg(p)
    p.set_defaults(run=_explain)

    p = sub.add_parser("recover", help="dropped traces back from the archive of dropped traces (tailsample.archive): "
                       "by trace ID from running services or an archive directory, or by time and content")
    p.add_argument("trace_ids", nargs="*", metavar="TRACE_ID", help="32 hex digits each")
    p.add_argument("--url", action="append", default=[], metavar="URL", help="a running service's telemetry "
                   "metrics address (repeatable, for a scaled-out deployment); it sends what it finds to its "
                   f"pipeline's exporters (default {DEFAULT_SERVICE_URL} without --archive)")
    p.add_argument("--archive", metavar="DIR", help="read an archive offline: the file_storage extension's "
                   "directory, as configured")
    p.add_argument("--since", metavar="WHEN", help="scan the archives (of the services, or --archive DIR): traces "
                   "archived since then (30m: 30 minutes ago; or an ISO time); default 24h")
    p.add_argument("--until", metavar="WHEN", help="scan: archived until then (10m, an ISO time; default now)")
    p.add_argument("--where", metavar="OTTL", help="scan: traces with a span matching this OTTL condition "
                   "(span context, as in an ottl_condition policy), e.g. 'attributes[\"user.id\"] == \"42\"'")
    p.add_argument("--limit", type=_limit_arg, default=10_000, metavar="N", help="scan: at most N traces "
                   "(default 10000)")
    p.add_argument("--yes", action="store_true", help="scan: recover what was found without asking")
    p.add_argument("--output", metavar="FILE", help="write the recovered traces to FILE in the file exporter's "
                   "JSON format instead of sending them to the exporters or printing them")
    p.add_argument("--print", action="store_true", help="with --url: print the recovered traces as trees "
                   "instead of sending them to the service's exporters")
    _timeout_arg(p)
    p.set_defaults(run=_recover)

    p = sub.add_parser("gaps", help="where services lose the trace context: propagation gaps per service pair, "
                       "from a running service, offline from OTLP files, or over traces stored in Jaeger; "
                       "--graph draws the service graph")
    p.add_argument("files", nargs="*", metavar="FILE", help="audit these OTLP files offline (the collector file "
                   "exporter's formats) instead of asking a service")
    p.add_argument("--url", help=f"a running service's telemetry metrics address (default {DEFAULT_SERVICE_URL})")
    p.add_argument("--top", type=_limit_arg, default=20, metavar="N", help="pairs and services listed (default 20)")
    p.add_argument("--graph", metavar="PATH", help="also draw the service graph, broken edges marked: .svg, .dot "
                   "(or .png/.pdf with Graphviz installed)")
    p.add_argument("--ignore", action="append", default=[], metavar="DEST", help="offline: a destination not to "
                   "audit (an external API; repeatable)")
    p.add_argument("--max-traces", type=int, default=1_000_000, help="offline: traces held at once (default 1M)")
    _backend_args(p, limit=True)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _timeout_arg(p)
    p.set_defaults(run=_gaps)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tailsample` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except ConfigError as exc:
        print(f"tailsample: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except (TailsampleError, OSError, ValueError) as exc:
        print(f"tailsample: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
