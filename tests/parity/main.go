// Command parity runs the OpenTelemetry Collector's tail_sampling processor (the real one, fetched as a Go
// module) over a file of OTLP ExportTraceServiceRequest payloads and prints which traces it kept, as JSON.
//
//	parity -config tail_sampling.yaml -input payloads.bin [-details] [-align-second]
//
// The config is a bare `tail_sampling` block (or a whole collector YAML, from which `processors.tail_sampling`
// is taken). The input holds the payloads in arrival order, each behind a 4-byte big-endian length.
//
// The processor is built as the collector builds it: the factory's default config, the YAML unmarshalled over
// it through confmap (unknown keys are errors), confmap.Validate, CreateTraces with nop telemetry and a
// consumertest.TracesSink as the next consumer, Start with a nop host. Every payload goes through ConsumeTraces;
// then Shutdown, which (unless drop_pending_traces_on_shutdown) decides every pending trace at once. See
// README.md for why that is deterministic and what is not.
//
// Decision hooks (the processor's exported WithSampledHooks / WithNonSampledHooks options, which observe and
// change nothing) report each decision with the deciding policy and the trace's size in bytes as the
// bytes_limiting policy computes it.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor/processortest"

	tsp "github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor/pkg/samplingpolicy"
)

const modulePath = "github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor"

// traceDetail is what the decision hooks saw for one trace.
type traceDetail struct {
	Decision string `json:"decision"` // sampled, not_sampled, dropped
	Policy   string `json:"policy,omitempty"`
	Spans    int64  `json:"spans"`
	Bytes    int    `json:"bytes"` // ptrace.ProtoMarshaler.TracesSize of the trace's batches, as bytes_limiting sees it
	// The processor's own running size (ResourceSpansSize of each part, as maximum_trace_size_bytes sees it).
	SizeBytes uint64 `json:"size_bytes"`
}

type result struct {
	Version   string   `json:"version"`
	GoVersion string   `json:"go_version"`
	Kept      []string `json:"kept"`
	KeptSpans int      `json:"kept_spans"`
	Errors    string   `json:"errors"`
	// From the decision hooks.
	Decisions     map[string]int          `json:"decisions"`  // sampled / not_sampled / dropped
	DecidedBy     map[string]int          `json:"decided_by"` // policy that sampled (or dropped) a trace
	DecidedEarly  int                     `json:"decided_before_shutdown"`
	DecisionSecs  int                     `json:"decision_wall_seconds"` // distinct Unix seconds decisions fell in
	Traces        map[string]*traceDetail `json:"traces,omitempty"`      // with -details
	Payloads      int                     `json:"payloads"`
	SpansIn       int                     `json:"spans_in"`
	ShutdownMilli float64                 `json:"shutdown_ms"`
}

func moduleVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == modulePath {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return "unknown"
}

func readPayloads(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	r := bytes.NewReader(data)
	for {
		var n uint32
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("payload %d: length prefix: %w", len(out), err)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("payload %d: %w", len(out), err)
		}
		out = append(out, buf)
	}
}

// loadConfig unmarshals the YAML over the factory's default config, as the collector does.
func loadConfig(text []byte, cfg *tsp.Config) error {
	retrieved, err := confmap.NewRetrievedFromYAML(text)
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	conf, err := retrieved.AsConf()
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	if conf.IsSet("processors") { // a whole collector YAML: take processors.tail_sampling
		conf, err = conf.Sub("processors::tail_sampling")
		if err != nil {
			return err
		}
	}
	if err := conf.Unmarshal(cfg); err != nil {
		return fmt.Errorf("unmarshal: %w", err)
	}
	return confmap.Validate(cfg)
}

// parseGaps reads "i=ms,j=ms": sleep ms before payload i.
func parseGaps(text string) (map[int]time.Duration, error) {
	gaps := map[int]time.Duration{}
	if text == "" {
		return gaps, nil
	}
	for _, item := range strings.Split(text, ",") {
		var i, ms int
		if _, err := fmt.Sscanf(item, "%d=%d", &i, &ms); err != nil {
			return nil, fmt.Errorf("-gaps %q: %w", item, err)
		}
		gaps[i] = time.Duration(ms) * time.Millisecond
	}
	return gaps, nil
}

func run(configPath, inputPath, outPath, gapsText string, details, alignSecond bool) (*result, error) {
	res := &result{
		Version:   moduleVersion(),
		Kept:      []string{},
		Decisions: map[string]int{},
		DecidedBy: map[string]int{},
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		res.GoVersion = bi.GoVersion
	}
	text, err := os.ReadFile(configPath)
	if err != nil {
		return res, err
	}
	payloads, err := readPayloads(inputPath)
	if err != nil {
		return res, err
	}
	res.Payloads = len(payloads)
	gaps, err := parseGaps(gapsText)
	if err != nil {
		return res, err
	}

	factory := tsp.NewFactory()
	cfg := factory.CreateDefaultConfig().(*tsp.Config)
	if err := loadConfig(text, cfg); err != nil {
		return res, fmt.Errorf("config: %w", err)
	}

	var mu sync.Mutex
	shuttingDown := false
	seconds := map[int64]struct{}{}
	if details {
		res.Traces = map[string]*traceDetail{}
	}
	hook := func(_ context.Context, id pcommon.TraceID, td *tsp.TraceData) {
		var m ptrace.ProtoMarshaler
		size := m.TracesSize(td.ReceivedBatches)
		mu.Lock()
		defer mu.Unlock()
		if !shuttingDown {
			res.DecidedEarly++
		}
		seconds[time.Now().Unix()] = struct{}{}
		d := "not_sampled"
		switch td.FinalDecision {
		case samplingpolicy.Sampled:
			d = "sampled"
		case samplingpolicy.Dropped:
			d = "dropped"
		}
		res.Decisions[d]++
		if td.PolicyName != "" {
			res.DecidedBy[td.PolicyName]++
		}
		if details {
			res.Traces[id.String()] = &traceDetail{Decision: d, Policy: td.PolicyName, Spans: td.SpanCount, Bytes: size,
				SizeBytes: td.SizeBytes}
		}
	}
	cfg.Options = append(cfg.Options, tsp.WithSampledHooks(hook), tsp.WithNonSampledHooks(hook))

	ctx := context.Background()
	sink := new(consumertest.TracesSink)
	proc, err := factory.CreateTraces(ctx, processortest.NewNopSettings(factory.Type()), cfg, sink)
	if err != nil {
		return res, fmt.Errorf("create: %w", err)
	}
	if err := proc.Start(ctx, componenttest.NewNopHost()); err != nil {
		return res, fmt.Errorf("start: %w", err)
	}
	var unmarshaler ptrace.ProtoUnmarshaler
	for i, p := range payloads {
		// Real time between payloads, so that decision_wait passes (the processor's ticker is wall-clock).
		time.Sleep(gaps[i])
		td, err := unmarshaler.UnmarshalTraces(p)
		if err != nil {
			_ = proc.Shutdown(ctx)
			return res, fmt.Errorf("payload %d: %w", i, err)
		}
		res.SpansIn += td.SpanCount()
		if err := proc.ConsumeTraces(ctx, td); err != nil {
			_ = proc.Shutdown(ctx)
			return res, fmt.Errorf("payload %d: consume: %w", i, err)
		}
	}
	if alignSecond {
		// Stateful policies (composite budgets per wall-clock second, token buckets) give one answer only if
		// every decision falls in one second; start the decisions early in a second.
		if frac := time.Duration(time.Now().Nanosecond()); frac > 300*time.Millisecond {
			time.Sleep(time.Second - frac + 5*time.Millisecond)
		}
	}
	mu.Lock()
	shuttingDown = true
	mu.Unlock()
	start := time.Now()
	if err := proc.Shutdown(ctx); err != nil {
		return res, fmt.Errorf("shutdown: %w", err)
	}
	res.ShutdownMilli = float64(time.Since(start).Microseconds()) / 1000
	res.DecisionSecs = len(seconds)

	kept := map[string]struct{}{}
	for _, td := range sink.AllTraces() {
		for _, rs := range td.ResourceSpans().All() {
			for _, ss := range rs.ScopeSpans().All() {
				for _, span := range ss.Spans().All() {
					kept[span.TraceID().String()] = struct{}{}
				}
			}
		}
	}
	for id := range kept {
		res.Kept = append(res.Kept, id)
	}
	sort.Strings(res.Kept)
	res.KeptSpans = sink.SpanCount()
	if outPath != "" {
		// What the sink got, as pdata re-encodes it: one length-prefixed ExportTraceServiceRequest per batch.
		var out bytes.Buffer
		var m ptrace.ProtoMarshaler
		for _, td := range sink.AllTraces() {
			b, err := m.MarshalTraces(td)
			if err != nil {
				return res, fmt.Errorf("marshal output: %w", err)
			}
			_ = binary.Write(&out, binary.BigEndian, uint32(len(b)))
			out.Write(b)
		}
		if err := os.WriteFile(outPath, out.Bytes(), 0o600); err != nil {
			return res, err
		}
	}
	if res.Decisions["sampled"] != len(res.Kept) {
		return res, fmt.Errorf("hooks saw %d sampled traces, the sink got spans of %d", res.Decisions["sampled"], len(res.Kept))
	}
	return res, nil
}

func main() {
	configPath := flag.String("config", "", "tail_sampling block as YAML")
	inputPath := flag.String("input", "", "length-prefixed OTLP ExportTraceServiceRequest payloads")
	details := flag.Bool("details", false, "report every trace's decision, deciding policy, span count and size")
	alignSecond := flag.Bool("align-second", false, "start the decisions early in a wall-clock second")
	outPath := flag.String("out", "", "write what reached the next consumer here (length-prefixed, as -input)")
	gapsText := flag.String("gaps", "", "i=ms,...: sleep ms before feeding payload i (wall-clock decision_wait)")
	flag.Parse()
	if *configPath == "" || *inputPath == "" {
		fmt.Fprintln(os.Stderr, "usage: parity -config FILE -input FILE [-out FILE] [-gaps i=ms,...] [-details] [-align-second]")
		os.Exit(2)
	}
	res, err := run(*configPath, *inputPath, *outPath, *gapsText, *details, *alignSecond)
	if err != nil {
		res.Errors = strings.TrimSpace(err.Error())
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
