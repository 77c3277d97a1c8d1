package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/tracing"
)

// otlpSpan is a span as an OTLP/HTTP exporter sent it.
type otlpSpan struct {
	service, app, pid   string
	name                string
	kind                tracepb.Span_SpanKind
	traceID, id, parent string // hex
	errorStatus         bool
}

func (s otlpSpan) String() string {
	return fmt.Sprintf("%s %s %q (pid %q)", s.service, s.kind, s.name, s.pid)
}

// otlpReceiver is an OTLP/HTTP traces endpoint: it decodes the protobuf
// export requests the control plane and the processes send it.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []otlpSpan
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("OTLP receiver: %s %s (%s)", req.Method, req.URL.Path, req.Header.Get("Content-Type"))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(req.Body)
		var export coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &export)
		}
		if err != nil {
			t.Errorf("OTLP receiver: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range export.ResourceSpans {
			res := map[string]string{}
			for _, kv := range rs.GetResource().GetAttributes() {
				res[kv.Key] = kv.GetValue().GetStringValue()
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					r.spans = append(r.spans, otlpSpan{
						service: res["service.name"], app: res[tracing.KeyApp], pid: res[tracing.KeyPID],
						name: s.Name, kind: s.Kind,
						traceID: hex.EncodeToString(s.TraceId), id: hex.EncodeToString(s.SpanId), parent: hex.EncodeToString(s.ParentSpanId),
						errorStatus: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
					})
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(r.Close)
	return r
}

// inTrace returns the spans received of trace id (hex).
func (r *otlpReceiver) inTrace(id string) []otlpSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []otlpSpan
	for _, s := range r.spans {
		if s.traceID == id {
			out = append(out, s)
		}
	}
	return out
}

// hop is a span expected in the trace: its service, process and name,
// and the hop it is a child of.
type hop struct {
	service, pid, name string
	kind               tracepb.Span_SpanKind
	parent             int // index in the hops; -1: the client's span
}

// One chain of functions across the control plane and three OS processes
// is one trace, with every hop the child of the one before: a client
// invokes "call" in a through the control plane, a invokes "send" in b, b
// sends a message to c, and c's trigger runs "log". The control plane and
// the processes export their spans over OTLP/HTTP, as configured by
// tracing.Config (the processes through the environment the control plane
// gives them).
func TestChainIsOneTraceAcrossProcesses(t *testing.T) {
	recv := newOTLPReceiver(t)
	cfg := tracing.Config{Endpoint: tracing.TracesURL(recv.URL), SampleRatio: 1}
	cpTP, err := tracing.NewProvider(cfg, tracing.ServiceControlPlane)
	if err != nil {
		t.Fatal(err)
	}
	defer cpTP.Shutdown(context.Background())
	// Processes export every 50 ms rather than every 5 s.
	cl := newClusterTraced(t, "", cpTP, append(cfg.ProcessEnv(), "OTEL_BSP_SCHEDULE_DELAY=50")...)
	cl.createApp(t, "tr", bins.testImage, "a", "b", "c")

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	c := client.New(cl.url, client.WithTracerProvider(tp))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ctx, root := tp.Tracer("test").Start(ctx, "test")
	_, err = c.Invoke(ctx, "tr", "a", "call", []byte("b send c log:k hello"))
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	var clientSpan sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "tr/call" {
			clientSpan = s
		}
	}
	if clientSpan == nil || clientSpan.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Fatalf("no client span under the test's span: %v", rec.Ended())
	}
	traceID := root.SpanContext().TraceID().String()

	const cp, proc = tracing.ServiceControlPlane, tracing.ServiceProcess
	recv.checkTrace(t, cpTP, traceID, clientSpan.SpanContext().SpanID().String(), []hop{
		{cp, "", "tr/call", tracepb.Span_SPAN_KIND_SERVER, -1},
		{cp, "", "tr/call", tracepb.Span_SPAN_KIND_CLIENT, 0},
		{proc, "a", "tr/call", tracepb.Span_SPAN_KIND_SERVER, 1},
		{proc, "a", "tr/send", tracepb.Span_SPAN_KIND_CLIENT, 2},
		{proc, "b", "tr/send", tracepb.Span_SPAN_KIND_SERVER, 3},
		{proc, "b", "send log", tracepb.Span_SPAN_KIND_PRODUCER, 4},
		{proc, "c", "receive log", tracepb.Span_SPAN_KIND_CONSUMER, 5},
		{proc, "c", "process log", tracepb.Span_SPAN_KIND_CONSUMER, 6},
	})

	// A REST send: the control plane relays it over the data plane, and
	// c's trigger runs in the client's trace.
	sctx, sendRoot := tp.Tracer("test").Start(ctx, "test send", trace.WithNewRoot())
	err = c.SendMessage(sctx, "tr", "c", "log:k", []byte("again"))
	sendRoot.End()
	if err != nil {
		t.Fatal(err)
	}
	var producer sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "send log" && s.Parent().SpanID() == sendRoot.SpanContext().SpanID() {
			producer = s
		}
	}
	if producer == nil {
		t.Fatalf("no producer span under the test's span: %v", rec.Ended())
	}
	recv.checkTrace(t, cpTP, sendRoot.SpanContext().TraceID().String(), producer.SpanContext().SpanID().String(), []hop{
		{cp, "", "send log", tracepb.Span_SPAN_KIND_SERVER, -1},
		{cp, "", "send log", tracepb.Span_SPAN_KIND_PRODUCER, 0},
		{proc, "c", "receive log", tracepb.Span_SPAN_KIND_CONSUMER, 1},
		{proc, "c", "process log", tracepb.Span_SPAN_KIND_CONSUMER, 2},
	})
	if got := cl.invoke(t, "tr", "c", "get", "log/k/hello"); got != "b|hello" {
		t.Errorf("c's log = %q, want b|hello", got)
	}
}

// checkTrace waits until the spans of trace id received are hops, each
// the child of the one it names (-1: of the span rootParent, made
// outside), then checks their links and resources.
func (r *otlpReceiver) checkTrace(t *testing.T, cpTP *sdktrace.TracerProvider, id, rootParent string, hops []hop) {
	t.Helper()
	var found []otlpSpan
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		_ = cpTP.ForceFlush(context.Background())
		spans := r.inTrace(id)
		found = found[:0]
		for _, h := range hops {
			var match []otlpSpan
			for _, s := range spans {
				if s.service == h.service && s.pid == h.pid && s.name == h.name && s.kind == h.kind {
					match = append(match, s)
				}
			}
			if len(match) != 1 {
				return fmt.Errorf("%d spans %s %s %q (pid %q) in the trace; have %v", len(match), h.service, h.kind, h.name, h.pid, spans)
			}
			found = append(found, match[0])
		}
		if len(spans) != len(hops) {
			return fmt.Errorf("%d spans in the trace, want %d: %v", len(spans), len(hops), spans)
		}
		return nil
	})
	for i, h := range hops {
		want := rootParent
		if h.parent >= 0 {
			want = found[h.parent].id
		}
		if found[i].parent != want {
			t.Errorf("%v: parent %s, want %s", found[i], found[i].parent, want)
		}
		if found[i].errorStatus {
			t.Errorf("%v: error status", found[i])
		}
		if h.service == tracing.ServiceProcess && found[i].app != "tr" {
			t.Errorf("%v: resource app %q, want tr", found[i], found[i].app)
		}
	}
}
