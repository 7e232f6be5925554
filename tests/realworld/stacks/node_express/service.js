'use strict';
// One service of the node_express stack (frontend -> cart -> payments), per tests/realworld's stack contract:
// Express on Node's http, traced by the real OpenTelemetry Node.js SDK and instrumentations from the npm registry.
// The SDK reads the standard variables itself (OTEL_SERVICE_NAME, OTEL_TRACES_EXPORTER,
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_BSP_SCHEDULE_DELAY); the http instrumentation does
// not read OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST, so header capture is configured here with its
// documented option, `headersToSpanAttributes`, from that same variable.

const { NodeSDK } = require('@opentelemetry/sdk-node');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express');
const { CompositePropagator, W3CTraceContextPropagator, W3CBaggagePropagator } = require('@opentelemetry/core');

const SERVICE = process.env.SERVICE_NAME || 'service';
const PORT = Number(process.env.PORT);
const DOWNSTREAM = process.env.DOWNSTREAM || '';
const DROP_CONTEXT = process.env.DROP_CONTEXT === '1';
const CAPTURED = (process.env.OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST || '')
  .split(',').map((h) => h.trim()).filter((h) => h !== '');

// Extracts like the default propagator, injects nothing: cart's only outgoing call is the one whose context is
// dropped, so installing it globally in cart leaves the CLIENT span to the real http instrumentation while no
// traceparent goes out, and frontend -> cart stays healthy.
class ExtractOnlyPropagator {
  constructor() {
    this.inner = new CompositePropagator({
      propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
    });
  }

  inject() {}

  extract(context, carrier, getter) {
    return this.inner.extract(context, carrier, getter);
  }

  fields() {
    return [];
  }
}

const sdk = new NodeSDK({
  instrumentations: [
    new HttpInstrumentation({
      headersToSpanAttributes: { server: { requestHeaders: CAPTURED } },
      ignoreIncomingRequestHook: (req) => req.url === '/health',
    }),
    new ExpressInstrumentation(),
  ],
  ...(DROP_CONTEXT ? { textMapPropagator: new ExtractOnlyPropagator() } : {}),
});
sdk.start();

// Required after sdk.start() so the instrumentations patch them.
const http = require('http');
const express = require('express');
const { trace } = require('@opentelemetry/api');

const FORWARDED = ['x-scenario', 'x-force-trace'];

function callDownstream(req) {
  return new Promise((resolve, reject) => {
    const headers = {};
    for (const name of FORWARDED) {
      if (req.headers[name] !== undefined) headers[name] = req.headers[name];
    }
    const out = http.get(`${DOWNSTREAM}/work`, { headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, traceIds: res.headers['x-trace-ids'] }));
      res.on('error', reject);
    });
    out.on('error', reject);
  });
}

const app = express();

app.get('/health', (req, res) => {
  res.status(200).send('ok\n');
});

app.get('/work', async (req, res) => {
  const own = trace.getActiveSpan()?.spanContext().traceId ?? '';
  if (DOWNSTREAM === '') {
    const scenario = req.headers['x-scenario'];
    if (scenario === 'slow') await new Promise((r) => setTimeout(r, 1200));
    res.set('x-trace-ids', own);
    res.status(scenario === 'error' ? 500 : 200).send(`${SERVICE} ${scenario || 'ok'}\n`);
    return;
  }
  try {
    const down = await callDownstream(req);
    res.set('x-trace-ids', down.traceIds ? `${own},${down.traceIds}` : own);
    res.status(down.status).send(`${SERVICE} <- ${down.status}\n`);
  } catch (e) {
    res.set('x-trace-ids', own);
    res.status(502).send(`${SERVICE}: downstream failed: ${e.message}\n`);
  }
});

const server = app.listen(PORT, '127.0.0.1');

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  server.close();
  server.closeAllConnections();
  // Flush the spans, then exit 0 well inside the harness's 5 s.
  const deadline = setTimeout(() => process.exit(0), 4000);
  sdk.shutdown().finally(() => {
    clearTimeout(deadline);
    process.exit(0);
  });
});
