// Command tailsampling-peer measures the OpenTelemetry Collector's tail_sampling processor (the real one, fetched
// as a Go module: contrib processor/tailsamplingprocessor v0.161.0) in-process, on the payload files tailsample's
// benchmarks read, and prints one JSON object.
//
//	tailsampling-peer -mode throughput|memory -config policies.yaml [-decision-wait D] [-num-traces N] FILE...
//
// The config is a whole collector YAML (`processors.tail_sampling` is taken) or a bare tail_sampling block. Each
// FILE holds OTLP ExportTraceServiceRequest payloads, each behind a 4-byte big-endian length (the collector file
// exporter's proto format). The processor is built as the collector builds it (as tests/parity/main.go does):
// the factory's default config, the YAML unmarshalled over it through confmap, confmap.Validate, CreateTraces,
// Start with a nop host. Then:
//
//   - throughput: every payload is decoded first (ptrace.ProtoUnmarshaler, timed on its own: a collector's
//     receiver does this per request), then fed flat out through ConsumeTraces; then Shutdown, which decides every
//     pending trace at once (the processor's own shutdown path: drain the work channel, stop the batcher, tick
//     until it is empty). The clock runs from the first ConsumeTraces to Shutdown's return, so it holds all the
//     processor's work (grouping and copying spans per trace in ConsumeTraces, the event loop's storing, every
//     decision, forwarding the kept spans) and no idle waiting. decision_wait defaults to 300 s so that no trace
//     is decided by the ticker during the run (reported: decided_before_shutdown, expected 0).
//   - memory: decision_wait defaults to 1 h, num_traces holds everything; every payload is decoded and fed, then
//     a sentinel trace, and the program waits until the event loop has stored the sentinel (its
//     new_trace_id_received counter, read from an SDK ManualReader), i.e. every payload before it. Then
//     runtime.GC and debug.FreeOSMemory, and the growth of the heap and of the process's RSS since before the
//     processor was created, per buffered span.
//
// num_traces defaults to max(the config's, traces in the input + 64), so no trace is evicted undecided.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/processortest"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	tsp "github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor/pkg/samplingpolicy"
)

const modulePath = "github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor"

const newTraceMetric = "otelcol_processor_tail_sampling_new_trace_id_received"

// input describes the payload files, read from their bytes without decoding them into pdata.
type input struct {
	Files        []string `json:"files"`
	Payloads     int      `json:"payloads"`
	Spans        int64    `json:"spans"`
	Traces       int64    `json:"traces"`        // distinct trace IDs
	PayloadBytes int64    `json:"payload_bytes"` // ExportTraceServiceRequest bytes, without the 4-byte prefixes
	// SpanMessageBytes is the sum of every Span message's own encoded size (its fields, without the tag and length
	// that frame it inside ScopeSpans): what protobuf's Span.ByteSize() gives.
	SpanMessageBytes        int64   `json:"span_message_bytes"`
	PayloadBytesPerSpan     float64 `json:"payload_bytes_per_span"`
	SpanMessageBytesPerSpan float64 `json:"span_message_bytes_per_span"`
}

type decisions struct {
	Sampled      int64 `json:"sampled"`
	NotSampled   int64 `json:"not_sampled"`
	Dropped      int64 `json:"dropped"`
	BeforeFinish int64 `json:"decided_before_shutdown"`
}

type throughputResult struct {
	DecodeWallS      float64   `json:"decode_wall_s"`
	DecodeCPUS       float64   `json:"decode_cpu_s"`
	IngestWallS      float64   `json:"ingest_wall_s"`   // until the last ConsumeTraces returned
	ShutdownWallS    float64   `json:"shutdown_wall_s"` // Shutdown: the rest of the queue, then every decision
	ProcessWallS     float64   `json:"process_wall_s"`  // ingest + shutdown
	ProcessCPUS      float64   `json:"process_cpu_s"`
	SpansPerS        float64   `json:"spans_per_s_processor_only"` // spans / process_wall_s
	SpansPerSUnmarsh float64   `json:"spans_per_s_with_unmarshal"` // spans / (decode_wall_s + process_wall_s)
	SpansPerCPUS     float64   `json:"spans_per_cpu_s_processor_only"`
	SpansPerCPUSUnm  float64   `json:"spans_per_cpu_s_with_unmarshal"`
	KeptSpans        int64     `json:"kept_spans"`
	KeptTraces       int64     `json:"kept_traces"`
	Decisions        decisions `json:"decisions"`
	AllDecided       bool      `json:"all_decided"`
	NumGC            uint32    `json:"num_gc"`
	GCPauseS         float64   `json:"gc_pause_s"`
	PeakRSSBytes     int64     `json:"peak_rss_bytes"` // VmHWM at the end (the whole process, all passes)
	// Each payload decoded and fed at once, one clock: the first pass of the process (cold) and the last (warm).
	ColdStreamed *pass `json:"cold_streamed"`
	Streamed     *pass `json:"streamed"`
}

// pass is one streamed run: decode + ConsumeTraces + Shutdown on one clock.
type pass struct {
	WallS        float64 `json:"wall_s"`
	CPUS         float64 `json:"cpu_s"`
	SpansPerS    float64 `json:"spans_per_s"`
	SpansPerCPUS float64 `json:"spans_per_cpu_s"`
	KeptSpans    int64   `json:"kept_spans"`
	AllDecided   bool    `json:"all_decided"`
	NumGC        uint32  `json:"num_gc"`
}

type memoryResult struct {
	BufferedSpans       int64   `json:"buffered_spans"` // the input's spans (the 1-span sentinel not counted)
	HeapAllocDelta      int64   `json:"heap_alloc_delta_bytes"`
	HeapInuseDelta      int64   `json:"heap_inuse_delta_bytes"`
	RSSDelta            int64   `json:"rss_delta_bytes"`      // VmRSS after GC + FreeOSMemory, minus before
	PeakRSSDelta        int64   `json:"peak_rss_delta_bytes"` // VmHWM (reset before feeding) minus RSS before
	HeapAllocPerSpan    float64 `json:"heap_alloc_bytes_per_span"`
	HeapInusePerSpan    float64 `json:"heap_inuse_bytes_per_span"`
	RSSPerSpan          float64 `json:"rss_bytes_per_span"`
	PeakRSSPerSpan      float64 `json:"peak_rss_bytes_per_span"`
	HeapAllocPerRawByte float64 `json:"heap_alloc_per_span_message_byte"`
	RSSPerRawByte       float64 `json:"rss_per_span_message_byte"`
	FeedWallS           float64 `json:"feed_wall_s"`
	Decided             int64   `json:"decided"` // expected 0: nothing is due within decision_wait
	HWMResetOK          bool    `json:"peak_rss_reset_ok"`
}

type result struct {
	Engine     string            `json:"engine"`
	Version    string            `json:"version"`
	GoVersion  string            `json:"go_version"`
	GOMAXPROCS int               `json:"gomaxprocs"`
	NumCPU     int               `json:"num_cpu"`
	GOGC       string            `json:"gogc"`
	GOMEMLIMIT string            `json:"gomemlimit"`
	Mode       string            `json:"mode"`
	Config     map[string]any    `json:"config"`
	Input      *input            `json:"input"`
	Throughput *throughputResult `json:"throughput,omitempty"`
	Memory     *memoryResult     `json:"memory,omitempty"`
	Error      string            `json:"error,omitempty"`
}

func moduleVersion() (string, string) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == modulePath {
			if dep.Replace != nil {
				return dep.Replace.Version, info.GoVersion
			}
			return dep.Version, info.GoVersion
		}
	}
	return "unknown", info.GoVersion
}

// readPayloads returns the payloads of every file as slices of the files' bytes (nothing copied).
func readPayloads(paths []string) ([][]byte, error) {
	var out [][]byte
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		for off := 0; off < len(data); {
			if len(data)-off < 4 {
				return nil, fmt.Errorf("%s: truncated length prefix at byte %d", path, off)
			}
			n := int(binary.BigEndian.Uint32(data[off:]))
			off += 4
			if len(data)-off < n {
				return nil, fmt.Errorf("%s: payload at byte %d is truncated", path, off-4)
			}
			out = append(out, data[off:off+n:off+n])
			off += n
		}
	}
	return out, nil
}

// --- a minimal protobuf walk of ExportTraceServiceRequest, to describe the input without pdata -------------

func varint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad varint")
}

// fields calls fn(field, body) for every length-delimited field of msg and skips the others.
func fields(msg []byte, fn func(field uint64, body []byte) error) error {
	for len(msg) > 0 {
		key, n, err := varint(msg)
		if err != nil {
			return err
		}
		msg = msg[n:]
		switch key & 7 {
		case 0:
			_, n, err = varint(msg)
			if err != nil {
				return err
			}
			msg = msg[n:]
		case 1:
			if len(msg) < 8 {
				return errors.New("truncated fixed64")
			}
			msg = msg[8:]
		case 5:
			if len(msg) < 4 {
				return errors.New("truncated fixed32")
			}
			msg = msg[4:]
		case 2:
			l, n, err := varint(msg)
			if err != nil {
				return err
			}
			msg = msg[n:]
			if uint64(len(msg)) < l {
				return errors.New("truncated field")
			}
			if err := fn(key>>3, msg[:l]); err != nil {
				return err
			}
			msg = msg[l:]
		default:
			return fmt.Errorf("wire type %d", key&7)
		}
	}
	return nil
}

// describe counts spans, span message bytes and distinct trace IDs; it returns the set of trace IDs too.
func describe(paths []string, payloads [][]byte) (*input, map[[16]byte]struct{}, error) {
	in := &input{Files: paths, Payloads: len(payloads)}
	ids := map[[16]byte]struct{}{}
	for i, p := range payloads {
		in.PayloadBytes += int64(len(p))
		err := fields(p, func(f uint64, rs []byte) error {
			if f != 1 {
				return nil
			}
			return fields(rs, func(f uint64, ss []byte) error {
				if f != 2 {
					return nil
				}
				return fields(ss, func(f uint64, span []byte) error {
					if f != 2 {
						return nil
					}
					in.Spans++
					in.SpanMessageBytes += int64(len(span))
					return fields(span, func(f uint64, v []byte) error {
						if f == 1 && len(v) == 16 {
							ids[[16]byte(v)] = struct{}{}
						}
						return nil
					})
				})
			})
		})
		if err != nil {
			return nil, nil, fmt.Errorf("payload %d: %w", i, err)
		}
	}
	in.Traces = int64(len(ids))
	if in.Spans > 0 {
		in.PayloadBytesPerSpan = float64(in.PayloadBytes) / float64(in.Spans)
		in.SpanMessageBytesPerSpan = float64(in.SpanMessageBytes) / float64(in.Spans)
	}
	return in, ids, nil
}

// --- config ---------------------------------------------------------------------------------------------------

// loadConfig unmarshals the YAML over the factory's default config, as the collector does (tests/parity/main.go).
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

// --- process measurements -------------------------------------------------------------------------------------

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// procStatus reads a "kB" line of /proc/self/status (VmRSS, VmHWM) in bytes.
func procStatus(key string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, key+":") {
			fs := strings.Fields(line[len(key)+1:])
			if len(fs) > 0 {
				kb, err := strconv.ParseInt(fs[0], 10, 64)
				if err == nil {
					return kb * 1024
				}
			}
		}
	}
	return -1
}

// resetPeakRSS sets VmHWM to the current RSS (Linux: write "5" to /proc/self/clear_refs).
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// --- the processor ----------------------------------------------------------------------------------------------

type counters struct {
	keptSpans, keptBatches       atomic.Int64
	sampled, notSampled, dropped atomic.Int64
	keptTraces                   atomic.Int64
	early                        atomic.Int64
	finishing                    atomic.Bool
}

func (c *counters) hook(_ context.Context, _ pcommon.TraceID, td *tsp.TraceData) {
	if !c.finishing.Load() {
		c.early.Add(1)
	}
	switch td.FinalDecision {
	case samplingpolicy.Sampled:
		c.sampled.Add(1)
	case samplingpolicy.Dropped:
		c.dropped.Add(1)
	default:
		c.notSampled.Add(1)
	}
}

func (c *counters) decisions() decisions {
	return decisions{Sampled: c.sampled.Load(), NotSampled: c.notSampled.Load(), Dropped: c.dropped.Load(),
		BeforeFinish: c.early.Load()}
}

func newProcessor(ctx context.Context, base *tsp.Config, c *counters, set processor.Settings) (processor.Traces, error) {
	cfg := *base // each processor gets its own hooks
	cfg.Options = append(slices.Clone(base.Options), tsp.WithSampledHooks(c.hook), tsp.WithNonSampledHooks(c.hook))
	// The next consumer counts what the processor forwards and keeps nothing.
	next, err := consumer.NewTraces(func(_ context.Context, td ptrace.Traces) error {
		c.keptSpans.Add(int64(td.SpanCount()))
		c.keptBatches.Add(1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	factory := tsp.NewFactory()
	proc, err := factory.CreateTraces(ctx, set, &cfg, next)
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	if err := proc.Start(ctx, componenttest.NewNopHost()); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	return proc, nil
}

// streamedPass runs a fresh processor with each payload decoded and fed at once, as a receiver does: one clock
// over decode, ConsumeTraces and Shutdown.
func streamedPass(ctx context.Context, cfg *tsp.Config, payloads [][]byte, in *input) (*pass, error) {
	c := &counters{}
	proc, err := newProcessor(ctx, cfg, c, processortest.NewNopSettings(tsp.NewFactory().Type()))
	if err != nil {
		return nil, err
	}
	var unmarshaler ptrace.ProtoUnmarshaler
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	cpu0, t0 := cpuSeconds(), time.Now()
	for i, p := range payloads {
		td, err := unmarshaler.UnmarshalTraces(p)
		if err != nil {
			return nil, fmt.Errorf("payload %d: %w", i, err)
		}
		if err := proc.ConsumeTraces(ctx, td); err != nil {
			return nil, fmt.Errorf("payload %d: consume: %w", i, err)
		}
	}
	c.finishing.Store(true)
	if err := proc.Shutdown(ctx); err != nil {
		return nil, fmt.Errorf("shutdown: %w", err)
	}
	res := &pass{WallS: time.Since(t0).Seconds(), CPUS: cpuSeconds() - cpu0}
	runtime.ReadMemStats(&ms1)
	res.NumGC = ms1.NumGC - ms0.NumGC
	spans := float64(in.Spans)
	res.SpansPerS, res.SpansPerCPUS = spans/res.WallS, spans/res.CPUS
	res.KeptSpans = c.keptSpans.Load()
	d := c.decisions()
	res.AllDecided = d.Sampled+d.NotSampled+d.Dropped == in.Traces && d.BeforeFinish == 0
	return res, nil
}

// predecodedPass decodes every payload first (timed alone), then feeds the decoded requests to a fresh processor
// (timed alone): the processor's own cost, and the decoding's.
func predecodedPass(ctx context.Context, cfg *tsp.Config, payloads [][]byte, in *input, res *throughputResult) error {
	c := &counters{}
	proc, err := newProcessor(ctx, cfg, c, processortest.NewNopSettings(tsp.NewFactory().Type()))
	if err != nil {
		return err
	}
	runtime.GC()

	var unmarshaler ptrace.ProtoUnmarshaler
	tds := make([]ptrace.Traces, len(payloads))
	cpu0, t0 := cpuSeconds(), time.Now()
	for i, p := range payloads {
		td, err := unmarshaler.UnmarshalTraces(p)
		if err != nil {
			return fmt.Errorf("payload %d: %w", i, err)
		}
		tds[i] = td
	}
	res.DecodeWallS, res.DecodeCPUS = time.Since(t0).Seconds(), cpuSeconds()-cpu0

	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu1, t1 := cpuSeconds(), time.Now()
	for i := range tds {
		if err := proc.ConsumeTraces(ctx, tds[i]); err != nil {
			return fmt.Errorf("payload %d: consume: %w", i, err)
		}
		tds[i] = ptrace.Traces{} // the processor copied what it keeps: let the decoded request go, as a receiver does
	}
	res.IngestWallS = time.Since(t1).Seconds()
	c.finishing.Store(true)
	t2 := time.Now()
	if err := proc.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	res.ShutdownWallS = time.Since(t2).Seconds()
	res.ProcessWallS = time.Since(t1).Seconds()
	res.ProcessCPUS = cpuSeconds() - cpu1
	runtime.ReadMemStats(&ms1)
	res.NumGC = ms1.NumGC - ms0.NumGC
	res.GCPauseS = float64(ms1.PauseTotalNs-ms0.PauseTotalNs) / 1e9

	spans := float64(in.Spans)
	res.SpansPerS = spans / res.ProcessWallS
	res.SpansPerSUnmarsh = spans / (res.DecodeWallS + res.ProcessWallS)
	res.SpansPerCPUS = spans / res.ProcessCPUS
	res.SpansPerCPUSUnm = spans / (res.DecodeCPUS + res.ProcessCPUS)
	res.KeptSpans = c.keptSpans.Load()
	res.Decisions = c.decisions()
	res.KeptTraces = res.Decisions.Sampled
	res.AllDecided = res.Decisions.Sampled+res.Decisions.NotSampled+res.Decisions.Dropped == in.Traces
	return nil
}

// runThroughput: a cold streamed pass (the process's first: heap growth and page faults included; it also warms
// the process up), then the pre-decoded pass and a warm streamed pass, each on a fresh processor.
func runThroughput(ctx context.Context, cfg *tsp.Config, payloads [][]byte, in *input) (*throughputResult, error) {
	res := &throughputResult{}
	var err error
	if res.ColdStreamed, err = streamedPass(ctx, cfg, payloads, in); err != nil {
		return nil, err
	}
	if err = predecodedPass(ctx, cfg, payloads, in, res); err != nil {
		return nil, err
	}
	if res.Streamed, err = streamedPass(ctx, cfg, payloads, in); err != nil {
		return nil, err
	}
	res.PeakRSSBytes = procStatus("VmHWM")
	return res, nil
}

// newTraceIDs reads the processor's new_trace_id_received counter.
func newTraceIDs(ctx context.Context, reader *sdkmetric.ManualReader) (int64, error) {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return 0, err
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != newTraceMetric {
				continue
			}
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n, nil
}

func sentinel(ids map[[16]byte]struct{}) ptrace.Traces {
	id := [16]byte{0xfe, 0xed, 0xfa, 0xce}
	for i := uint32(0); ; i++ {
		binary.BigEndian.PutUint32(id[12:], i)
		if _, taken := ids[id]; !taken {
			break
		}
	}
	td := ptrace.NewTraces()
	span := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetTraceID(pcommon.TraceID(id))
	span.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
	span.SetName("sentinel")
	span.SetStartTimestamp(1)
	span.SetEndTimestamp(2)
	return td
}

func runMemory(ctx context.Context, cfg *tsp.Config, payloads [][]byte, in *input, ids map[[16]byte]struct{}) (*memoryResult, error) {
	sentinelTD := sentinel(ids)
	clear(ids)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	factory := tsp.NewFactory()
	set := processortest.NewNopSettings(factory.Type())
	set.MeterProvider = mp
	c := &counters{}

	var ms0, ms1 runtime.MemStats
	runtime.GC()
	debug.FreeOSMemory()
	runtime.ReadMemStats(&ms0)
	rss0 := procStatus("VmRSS")
	res := &memoryResult{BufferedSpans: in.Spans, HWMResetOK: resetPeakRSS()}

	proc, err := newProcessor(ctx, cfg, c, set)
	if err != nil {
		return nil, err
	}
	var unmarshaler ptrace.ProtoUnmarshaler
	t0 := time.Now()
	for i, p := range payloads {
		td, err := unmarshaler.UnmarshalTraces(p)
		if err != nil {
			return nil, fmt.Errorf("payload %d: %w", i, err)
		}
		if err := proc.ConsumeTraces(ctx, td); err != nil {
			return nil, fmt.Errorf("payload %d: consume: %w", i, err)
		}
	}
	if err := proc.ConsumeTraces(ctx, sentinelTD); err != nil {
		return nil, fmt.Errorf("sentinel: %w", err)
	}
	// The event loop takes batches in order: once it has counted the sentinel as a new trace, it has stored
	// every payload before it.
	deadline := time.Now().Add(10 * time.Minute)
	for {
		n, err := newTraceIDs(ctx, reader)
		if err != nil {
			return nil, err
		}
		if n >= in.Traces+1 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the processor stored %d of %d traces in 10 minutes", n, in.Traces+1)
		}
		time.Sleep(time.Millisecond)
	}
	res.FeedWallS = time.Since(t0).Seconds()
	hwm := procStatus("VmHWM")
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	runtime.ReadMemStats(&ms1)
	rss1 := procStatus("VmRSS")

	res.HeapAllocDelta = int64(ms1.HeapAlloc) - int64(ms0.HeapAlloc)
	res.HeapInuseDelta = int64(ms1.HeapInuse) - int64(ms0.HeapInuse)
	res.RSSDelta = rss1 - rss0
	res.PeakRSSDelta = hwm - rss0
	spans := float64(in.Spans)
	res.HeapAllocPerSpan = float64(res.HeapAllocDelta) / spans
	res.HeapInusePerSpan = float64(res.HeapInuseDelta) / spans
	res.RSSPerSpan = float64(res.RSSDelta) / spans
	res.PeakRSSPerSpan = float64(res.PeakRSSDelta) / spans
	res.HeapAllocPerRawByte = float64(res.HeapAllocDelta) / float64(in.SpanMessageBytes)
	res.RSSPerRawByte = float64(res.RSSDelta) / float64(in.SpanMessageBytes)
	d := c.decisions()
	res.Decided = d.Sampled + d.NotSampled + d.Dropped
	runtime.KeepAlive(proc)
	runtime.KeepAlive(payloads)
	return res, nil
}

func run(mode, configPath string, decisionWait time.Duration, numTraces uint64, paths []string) (*result, error) {
	res := &result{Engine: "otelcol-contrib tailsamplingprocessor", Mode: mode, GOMAXPROCS: runtime.GOMAXPROCS(0),
		NumCPU: runtime.NumCPU(), GOGC: os.Getenv("GOGC"), GOMEMLIMIT: os.Getenv("GOMEMLIMIT")}
	res.Version, res.GoVersion = moduleVersion()
	text, err := os.ReadFile(configPath)
	if err != nil {
		return res, err
	}
	factory := tsp.NewFactory()
	cfg := factory.CreateDefaultConfig().(*tsp.Config)
	if err := loadConfig(text, cfg); err != nil {
		return res, fmt.Errorf("config: %w", err)
	}
	payloads, err := readPayloads(paths)
	if err != nil {
		return res, err
	}
	in, ids, err := describe(paths, payloads)
	if err != nil {
		return res, err
	}
	res.Input = in

	if decisionWait == 0 {
		decisionWait = 300 * time.Second
		if mode == "memory" {
			decisionWait = time.Hour
		}
	}
	cfg.DecisionWait = decisionWait
	if numTraces == 0 {
		numTraces = max(cfg.NumTraces, uint64(in.Traces)+64)
	}
	cfg.NumTraces = numTraces
	names := make([]string, 0, len(cfg.PolicyCfgs))
	for _, p := range cfg.PolicyCfgs {
		names = append(names, p.Name)
	}
	res.Config = map[string]any{"file": configPath, "decision_wait_s": cfg.DecisionWait.Seconds(),
		"num_traces": cfg.NumTraces, "num_shards": cfg.NumShards, "policies": names}

	ctx := context.Background()
	switch mode {
	case "throughput":
		clear(ids)
		ids = nil
		res.Throughput, err = runThroughput(ctx, cfg, payloads, in)
	case "memory":
		res.Memory, err = runMemory(ctx, cfg, payloads, in, ids)
	default:
		err = fmt.Errorf("unknown mode %q (throughput, memory)", mode)
	}
	return res, err
}

func main() {
	mode := flag.String("mode", "throughput", "throughput or memory")
	configPath := flag.String("config", "", "collector YAML with processors.tail_sampling (or a bare tail_sampling block)")
	decisionWait := flag.Duration("decision-wait", 0, "override decision_wait (default: 300s for throughput, 1h for memory)")
	numTraces := flag.Uint64("num-traces", 0, "override num_traces (default: max(config, traces in the input + 64))")
	flag.Parse()
	if *configPath == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: tailsampling-peer -mode throughput|memory -config FILE [-decision-wait D] [-num-traces N] PAYLOADS...")
		os.Exit(2)
	}
	res, err := run(*mode, *configPath, *decisionWait, *numTraces, flag.Args())
	code := 0
	if err != nil {
		res.Error = strings.TrimSpace(err.Error())
		code = 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}
