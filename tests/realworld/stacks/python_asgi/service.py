"""python_asgi: Starlette on uvicorn + opentelemetry-instrumentation-starlette (ASGI) and -httpx (AsyncClient).

One of the three services frontend → cart → payments of tests/realworld/README.md's contract, chosen by
SERVICE_NAME. Header capture comes from OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST, conventions from
OTEL_SEMCONV_STABILITY_OPT_IN, both read by the instrumentation itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python_common"))
os.environ.setdefault("OTEL_PYTHON_STARLETTE_EXCLUDED_URLS", "health")  # read when the instrumentation is imported

import httpx
import otelsetup
import uvicorn
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.starlette import StarletteInstrumentor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

provider = otelsetup.setup_tracing()
HTTPXClientInstrumentor().instrument()
client: httpx.AsyncClient | None = None


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def work(request: Request) -> PlainTextResponse:
    global client
    if otelsetup.DOWNSTREAM:
        if client is None:
            client = httpx.AsyncClient(timeout=30)
        headers = {k: v for k in otelsetup.FORWARDED if (v := request.headers.get(k)) is not None}
        r = await client.get(otelsetup.DOWNSTREAM + "/work", headers=headers)
        return PlainTextResponse(r.text, status_code=r.status_code,
                                 headers={"x-trace-ids": otelsetup.trace_ids(r.headers.get("x-trace-ids"))})
    scenario = request.headers.get("x-scenario", "")
    ids = {"x-trace-ids": otelsetup.trace_ids(None)}
    if scenario == "error":
        return PlainTextResponse("payment failed\n", status_code=500, headers=ids)
    if scenario == "slow":
        await asyncio.sleep(otelsetup.SLOW_S)
    return PlainTextResponse("ok\n", headers=ids)


app = Starlette(routes=[Route("/health", health), Route("/work", work)])
StarletteInstrumentor.instrument_app(app)

if __name__ == "__main__":
    def exit_flushed(signum: int, frame: object) -> None:
        provider.shutdown()
        sys.exit(0)

    # uvicorn stops gracefully on SIGTERM, then restores this handler and raises the signal again into it
    signal.signal(signal.SIGTERM, exit_flushed)
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=otelsetup.PORT, log_level="warning")).run()
    provider.shutdown()
