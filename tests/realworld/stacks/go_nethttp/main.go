// One service of the go_nethttp stack (frontend -> cart -> payments), per tests/realworld's stack contract:
// net/http traced by otelhttp (server handler and client transport) and the OpenTelemetry Go SDK with its OTLP
// trace exporters, all from the Go module proxy.
//
// The exporters read OTEL_EXPORTER_OTLP_ENDPOINT, the batch span processor OTEL_BSP_SCHEDULE_DELAY and the default
// resource OTEL_SERVICE_NAME themselves; the Go SDK has no exporter chosen by environment, so the protocol
// (OTEL_EXPORTER_OTLP_PROTOCOL) picks otlptracegrpc or otlptracehttp here.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

var forwarded = []string{"x-scenario", "x-force-trace"}

func newExporter(ctx context.Context) (*otlptrace.Exporter, error) {
	switch p := os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p {
	case "grpc":
		return otlptracegrpc.New(ctx)
	case "", "http/protobuf":
		return otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("unsupported OTEL_EXPORTER_OTLP_PROTOCOL %q (grpc or http/protobuf)", p)
	}
}

// capturedHeaders are the request headers the handler records on the SERVER span: otelhttp has no header capture
// (unlike the Python, Java and Node.js instrumentations), so the handler sets the attribute itself, spelled as the
// specification does, `http.request.header.<lowercase name with its dashes>`, a string array of the values.
func capturedHeaders() []string {
	var names []string
	for _, h := range strings.Split(os.Getenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"), ",") {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			names = append(names, h)
		}
	}
	return names
}

func main() {
	service := os.Getenv("SERVICE_NAME")
	port := os.Getenv("PORT")
	downstream := os.Getenv("DOWNSTREAM")
	captured := capturedHeaders()

	ctx := context.Background()
	exp, err := newExporter(ctx)
	if err != nil {
		log.Fatalf("%s: %v", service, err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	otel.SetTracerProvider(tp)
	propagator := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	otel.SetTextMapPropagator(propagator)

	clientOpts := []otelhttp.Option{}
	if os.Getenv("DROP_CONTEXT") == "1" {
		// Only this client's injection is switched off: the CLIENT span is still otelhttp's, the server side
		// still extracts with the global propagator, so frontend -> cart stays healthy.
		clientOpts = append(clientOpts, otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator()))
	}
	client := &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport, clientOpts...)}

	work := func(w http.ResponseWriter, r *http.Request) {
		span := trace.SpanFromContext(r.Context())
		for _, h := range captured {
			if values := r.Header.Values(h); len(values) > 0 {
				span.SetAttributes(attribute.StringSlice("http.request.header."+h, values))
			}
		}
		own := span.SpanContext().TraceID().String()
		if downstream == "" {
			scenario := r.Header.Get("x-scenario")
			if scenario == "slow" {
				time.Sleep(1200 * time.Millisecond)
			}
			w.Header().Set("x-trace-ids", own)
			if scenario == "error" {
				w.WriteHeader(http.StatusInternalServerError)
			}
			fmt.Fprintf(w, "%s %s\n", service, scenario)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, downstream+"/work", nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for _, h := range forwarded {
			for _, v := range r.Header.Values(h) {
				req.Header.Add(h, v)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			w.Header().Set("x-trace-ids", own)
			http.Error(w, fmt.Sprintf("%s: downstream failed: %v", service, err), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		ids := own
		if down := resp.Header.Get("x-trace-ids"); down != "" {
			ids += "," + down
		}
		w.Header().Set("x-trace-ids", ids)
		w.WriteHeader(resp.StatusCode)
		fmt.Fprintf(w, "%s <- %d\n", service, resp.StatusCode)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /work", otelhttp.NewHandler(http.HandlerFunc(work), "GET /work"))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { // not wrapped: no span
		_, _ = io.WriteString(w, "ok\n")
	})

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		log.Fatalf("%s: %v", service, err)
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		if err := server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("%s: %v", service, err)
		}
	}()
	<-stop
	// Flush the spans, then exit 0 well inside the harness's 5 s.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	_ = server.Shutdown(shutdownCtx)
	if err := tp.Shutdown(shutdownCtx); err != nil {
		log.Printf("%s: tracer provider shutdown: %v", service, err)
	}
}
