package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/praas-dev/praas/client"
)

var payloadSizes = []int{1, 1 << 10, 64 << 10, 1 << 20, 16 << 20}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	_, _ = r.Read(b)
	return b
}

// httpEchoClient posts payloads to the baseline net/http echo server the
// way client.Client.InvokeControlPlane posts invocations.
type httpEchoClient struct {
	url  string
	http *http.Client
}

func (h *httpEchoClient) roundTrip(ctx context.Context, payload []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(payload))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := h.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || len(out) != len(payload) {
		return fmt.Errorf("http echo: %s, %d bytes", resp.Status, len(out))
	}
	return nil
}

// expInvoke is experiment 1: no-op invocation latency over the data plane
// and the control plane, against a TCP echo and a net/http echo.
func expInvoke(ctx context.Context, e *Env) (*Section, []Measure, error) {
	sec := &Section{Num: 1, Title: "Invocation latency", Plot: "1-invoke.svg"}
	sec.Text = []string{
		"A no-op function (`echo` of the builtin image) invoked with payloads of 1 B to 16 MiB, " +
			"one invocation at a time, from a client on the same host:",
		"- **data plane**: `client.DataConn.InvokeInto` (the result read into a reused buffer, as the TCP client does) over a connection dialed with the address and token the control plane gives (`GET /v1/apps/{app}/processes/{pid}`);\n" +
			"- **control plane**: `POST /v1/apps/{app}/invoke/echo?pid=...` through `praas up` (`client.Client.InvokeControlPlane`), which forwards over its own data-plane connection;\n" +
			"- **TCP echo** (the floor of the data plane): a Go server in its own process echoing frames of a 4-byte length and the payload, TCP_NODELAY, buffers reused, one connection;\n" +
			"- **net/http echo** (the floor of any HTTP gateway): a Go `net/http` server in its own process answering a POST with its body, called with the same `http.Client` settings as the praas client.",
		"The four are interleaved: every repetition runs each once, in rotating order. Latency is the round trip seen by the client, in µs.",
	}
	dc, err := dataConn(ctx, e.C, "demo", "invoke")
	if err != nil {
		return sec, nil, err
	}
	defer dc.Close()
	tcp, err := dialTCPEcho(e.TCPEcho.Addr)
	if err != nil {
		return sec, nil, err
	}
	defer tcp.Close()
	hc := &httpEchoClient{url: "http://" + e.HTTPEcho.Addr + "/echo",
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	defer hc.http.CloseIdleConnections()
	cc := client.New(e.CP.Endpoint, client.WithToken(e.CP.Token)) // a client used only for the control-plane path
	defer cc.Close()

	tbl := Table{Head: []string{"payload", "path", "median µs", "99% CI of median", "p99 µs", "ratio to floor", "n"}}
	var ms []Measure
	var plot []series
	names := []string{"TCP echo", "data plane", "net/http echo", "control plane"}
	for _, n := range names {
		plot = append(plot, series{name: n})
	}
	for _, size := range payloadSizes {
		payload := randomBytes(size)
		// Like the TCP echo client, the data-plane client reuses its result buffer.
		result := make([]byte, size)
		ops := []op{
			{"data plane", timed(func(ctx context.Context) error {
				out, err := dc.InvokeInto(ctx, "echo", payload, result)
				if err == nil && len(out) != size {
					err = fmt.Errorf("echo returned %d bytes", len(out))
				}
				return err
			})},
			{"control plane", timed(func(ctx context.Context) error {
				res, err := cc.InvokeControlPlane(ctx, "demo", "invoke", "echo", payload)
				if err == nil && len(res.Output) != size {
					err = fmt.Errorf("echo returned %d bytes", len(res.Output))
				}
				return err
			})},
			{"TCP echo", timed(func(context.Context) error { return tcp.roundTrip(payload) })},
			{"net/http echo", timed(func(ctx context.Context) error { return hc.roundTrip(ctx, payload) })},
		}
		warm, reps := e.repsFor(size)
		start := time.Now()
		s, errs := interleave(ctx, warm, reps, ops)
		if err := firstErr(errs); err != nil {
			return sec, ms, err
		}
		label := sizeLabel(size)
		tcpS, dpS, httpS, cpS := s.sum("TCP echo"), s.sum("data plane"), s.sum("net/http echo"), s.sum("control plane")
		ms = append(ms,
			measure("tcp_echo_"+label, "us", tcpS),
			measure("http_echo_"+label, "us", httpS),
			versus("dataplane_invoke_"+label+"_vs_tcp", "us", dpS, "tcp_echo_"+label, tcpS),
			versus("controlplane_invoke_"+label+"_vs_http", "us", cpS, "http_echo_"+label, httpS),
			versus("dataplane_invoke_"+label+"_vs_controlplane", "us", dpS, "controlplane_invoke_"+label, cpS),
		)
		for _, row := range []struct {
			name string
			s    ratioRow
		}{
			{"TCP echo", ratioRow{s: tcpS}},
			{"data plane", ratioRow{s: dpS, base: tcpS, hasBase: true}},
			{"net/http echo", ratioRow{s: httpS}},
			{"control plane", ratioRow{s: cpS, base: httpS, hasBase: true}},
		} {
			tbl.add(prettySize(size), row.name, fmtVal(row.s.s.Median), fmtCI(row.s.s), fmtVal(row.s.s.P99), row.s.ratio(), fmt.Sprint(row.s.s.N))
		}
		for i, n := range names {
			plot[i].add(float64(size), s.sum(n))
		}
		e.logf("exp 1 %-6s data plane %s µs (TCP %s), control plane %s µs (http %s) [%s]", label,
			fmtVal(dpS.Median), fmtVal(tcpS.Median), fmtVal(cpS.Median), fmtVal(httpS.Median), time.Since(start).Round(time.Millisecond))
	}
	sec.Tables = append(sec.Tables, tbl)
	if err := linePlot(e.plotPath(sec.Plot), "Invocation latency (median, 99% CI)", "payload", "latency [µs]", byteLabel, plot); err != nil {
		return sec, ms, err
	}
	return sec, ms, nil
}

type ratioRow struct {
	s, base statsSummary
	hasBase bool
}

func (r ratioRow) ratio() string {
	if !r.hasBase {
		return "(floor)"
	}
	return fmtRatio(r.s.Median / r.base.Median)
}

func firstErr(errs map[string]error) error {
	for _, err := range errs {
		return err
	}
	return nil
}
