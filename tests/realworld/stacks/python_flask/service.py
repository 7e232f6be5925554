"""python_flask: Flask (werkzeug, threaded) + opentelemetry-instrumentation-flask and -requests.

One of the three services frontend → cart → payments of tests/realworld/README.md's contract, chosen by
SERVICE_NAME. Header capture comes from OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST, conventions from
OTEL_SEMCONV_STABILITY_OPT_IN, both read by the instrumentation itself.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python_common"))

import otelsetup
import requests
from flask import Flask, Response, request
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor

provider = otelsetup.setup_tracing()
RequestsInstrumentor().instrument()
app = Flask(otelsetup.SERVICE)
FlaskInstrumentor().instrument_app(app, excluded_urls="health")
session = requests.Session()


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/work")
def work() -> Response:
    if otelsetup.DOWNSTREAM:
        headers = {k: v for k in otelsetup.FORWARDED if (v := request.headers.get(k)) is not None}
        r = session.get(otelsetup.DOWNSTREAM + "/work", headers=headers, timeout=30)
        return Response(r.text, status=r.status_code,
                        headers={"x-trace-ids": otelsetup.trace_ids(r.headers.get("x-trace-ids"))})
    scenario = request.headers.get("x-scenario", "")
    ids = {"x-trace-ids": otelsetup.trace_ids(None)}
    if scenario == "error":
        return Response("payment failed\n", status=500, headers=ids)
    if scenario == "slow":
        time.sleep(otelsetup.SLOW_S)
    return Response("ok\n", status=200, headers=ids)


if __name__ == "__main__":
    otelsetup.on_sigterm(provider)
    app.run(host="127.0.0.1", port=otelsetup.PORT, threaded=True)
