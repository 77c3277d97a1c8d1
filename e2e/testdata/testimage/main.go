// Command testimage is a praas image for the end-to-end tests of package
// e2e: functions with a standard and a batch message trigger, process-to-
// process and local invocations, and a state log for dependency chains.
//
// The tests build it once and create apps whose image is its path.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/praas-dev/praas"
	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
)

func main() {
	praas.Register("echo", echo)
	praas.Register("whoami", whoami)
	praas.Register("get", get)
	praas.Register("keys", keys)
	praas.Register("send", send)
	praas.Register("recv", recv)
	praas.Register("call", call)
	praas.Register("append", appendChain)
	praas.Register("busy", busy)
	praas.Register("log", logMessage, praas.OnMessage())
	praas.Register("batch", batch, praas.Batch(4))
	praas.Register("relay", relay, praas.OnMessage())
	praas.Register("trigger-info", triggerInfo)
	praas.Register("http", httpRequest)
	praas.Register("env", envNames)
	praas.Register("drain", drain)
	praas.Register("counter", counter)
	praas.Serve()
}

// echo returns its input.
func echo(_ context.Context, _ *praas.Process, in []byte) ([]byte, error) { return in, nil }

// whoami returns the pid of the process that runs it.
func whoami(_ context.Context, p *praas.Process, _ []byte) ([]byte, error) {
	return []byte(p.PID()), nil
}

// get takes a state key and returns its value.
func get(_ context.Context, p *praas.Process, in []byte) ([]byte, error) {
	v, ok := p.State(string(in))
	if !ok {
		return nil, fmt.Errorf("%w: state key %q is not set", errs.ErrNotFound, in)
	}
	return v, nil
}

// keys takes a prefix and returns the state keys with it, one a line, sorted.
func keys(_ context.Context, p *praas.Process, in []byte) ([]byte, error) {
	var out []byte
	for _, k := range p.StateKeys() {
		if strings.HasPrefix(k, string(in)) {
			out = append(out, k...)
			out = append(out, '\n')
		}
	}
	return out, nil
}

// send takes "PID KEY DATA..." and sends DATA to PID under KEY.
func send(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	f := strings.SplitN(string(in), " ", 3)
	if len(f) < 2 {
		return nil, fmt.Errorf("%w: send expects PID KEY DATA", errs.ErrInvalidArgument)
	}
	var data []byte
	if len(f) == 3 {
		data = []byte(f[2])
	}
	return nil, p.Send(ctx, f[0], f[1], data)
}

// recv takes "SRC KEY TIMEOUT_MS" (SRC may be ANY) and returns "SRC DATA"
// of the oldest matching message.
func recv(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	f := strings.Fields(string(in))
	if len(f) != 3 {
		return nil, fmt.Errorf("%w: recv expects SRC KEY TIMEOUT_MS", errs.ErrInvalidArgument)
	}
	ms, err := strconv.Atoi(f[2])
	if err != nil {
		return nil, fmt.Errorf("%w: recv: bad timeout %q", errs.ErrInvalidArgument, f[2])
	}
	src := f[0]
	if src == "ANY" {
		src = praas.Any
	}
	m, err := p.Recv(ctx, src, f[1], time.Duration(ms)*time.Millisecond)
	if err != nil {
		return nil, err
	}
	return append([]byte(m.Src+" "), m.Data...), nil
}

// call takes "PID FUNCTION INPUT..." and invokes FUNCTION in process PID
// ("self": this process, a local call) with INPUT.
func call(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	f := strings.SplitN(string(in), " ", 3)
	if len(f) < 2 {
		return nil, fmt.Errorf("%w: call expects PID FUNCTION INPUT", errs.ErrInvalidArgument)
	}
	dest := f[0]
	if dest == "self" {
		dest = praas.Self
	}
	var input []byte
	if len(f) == 3 {
		input = []byte(f[2])
	}
	return p.Invoke(ctx, dest, f[1], input)
}

// appendChain takes "SLEEP_MS TEXT": it sleeps, then appends TEXT to state
// key "chain" and returns the new value.
func appendChain(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	msText, text, _ := bytes.Cut(in, []byte(" "))
	ms, err := strconv.Atoi(string(msText))
	if err != nil {
		return nil, fmt.Errorf("%w: append expects SLEEP_MS TEXT", errs.ErrInvalidArgument)
	}
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.UpdateState("chain", func(old []byte, _ bool) []byte {
		return append(bytes.Clone(old), text...)
	})
}

// busy takes MS: it sets state key "busy" to "running", sleeps MS
// milliseconds even if the process is told to stop (a swap-out waits for
// it while draining), then sets "busy" to "done".
func busy(_ context.Context, p *praas.Process, in []byte) ([]byte, error) {
	ms, err := strconv.Atoi(string(in))
	if err != nil {
		return nil, fmt.Errorf("%w: busy expects MS", errs.ErrInvalidArgument)
	}
	p.SetState("busy", []byte("running"))
	time.Sleep(time.Duration(ms) * time.Millisecond)
	p.SetState("busy", []byte("done"))
	return nil, nil
}

// logMessage runs for every message with key "log" or "log:K": it stores
// "SRC|INPUT" under "log/K/DATA".
func logMessage(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	key, msgs, ok := praas.Triggered(ctx)
	if !ok || len(msgs) != 1 {
		return nil, fmt.Errorf("%w: log runs for one message, got %d", errs.ErrFailedPrecondition, len(msgs))
	}
	m := msgs[0]
	p.SetState("log/"+key+"/"+string(m.Data), []byte(m.Src+"|"+string(in)))
	return nil, nil
}

// batch runs once four messages with key "batch" or "batch:K" arrived: it
// stores "key=KEY" and "SRC:MESSAGE_KEY:DATA" for each message, in arrival
// order, under "batch/" and the first message's data.
func batch(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	key, msgs, ok := praas.Triggered(ctx)
	if !ok || len(msgs) == 0 {
		return nil, fmt.Errorf("%w: batch runs for messages", errs.ErrFailedPrecondition)
	}
	parts := []string{"key=" + key}
	for _, m := range msgs {
		parts = append(parts, m.Src+":"+m.Key+":"+string(m.Data))
	}
	if in != nil {
		parts = append(parts, "input="+string(in))
	}
	p.SetState("batch/"+string(msgs[0].Data), []byte(strings.Join(parts, ",")))
	return nil, nil
}

// relay runs for every message with key "relay:K": it invokes the function
// named by the message data in this process (a local call) and stores the
// result under "relay/K".
func relay(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	key, _, _ := praas.Triggered(ctx)
	out, err := p.Invoke(ctx, praas.Self, string(in), nil)
	if err != nil {
		out = []byte("error: " + err.Error())
	}
	p.SetState("relay/"+key, out)
	return nil, nil
}

// triggerInfo reports what praas.Triggered tells it: "ok=BOOL key=KEY n=COUNT".
func triggerInfo(ctx context.Context, _ *praas.Process, _ []byte) ([]byte, error) {
	key, msgs, ok := praas.Triggered(ctx)
	return fmt.Appendf(nil, "ok=%v key=%s n=%d", ok, key, len(msgs)), nil
}

// httpRequest makes the HTTP request its input describes, as any function
// could, with what the process holds: JSON {"method","url","body","auth"},
// where auth adds the process's own credential from its environment. It
// returns the status code, a newline and up to 64 KiB of the answer.
func httpRequest(ctx context.Context, _ *praas.Process, in []byte) ([]byte, error) {
	var req struct {
		Method, URL, Body string
		Auth              bool
	}
	if err := json.Unmarshal(in, &req); err != nil {
		return nil, fmt.Errorf("%w: http expects {method, url, body, auth}: %v", errs.ErrInvalidArgument, err)
	}
	var body io.Reader
	if req.Body != "" {
		body = strings.NewReader(req.Body)
	}
	r, err := http.NewRequestWithContext(ctx, req.Method, req.URL, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errs.ErrInvalidArgument, err)
	}
	if req.Auth {
		r.Header.Set("Authorization", "Bearer "+os.Getenv(cpapi.EnvToken))
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "%d\n%s", resp.StatusCode, b), nil
}

// envNames returns the names of the environment variables the process has
// (not their values), one a line, sorted.
func envNames(context.Context, *praas.Process, []byte) ([]byte, error) {
	var names []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		names = append(names, name)
	}
	slices.Sort(names)
	return []byte(strings.Join(names, "\n")), nil
}

// drain takes a message key, receives every message with that key in the
// mailbox now and appends their data, a line each, to state
// "received/KEY", all in one UpdateState: a checkpoint sees each message
// either unread or recorded, never neither. It returns how many it took.
// The fault-injection suite's receiver.
func drain(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
	key := string(in)
	n := 0
	_, err := p.UpdateState("received/"+key, func(old []byte, _ bool) []byte {
		out := bytes.Clone(old)
		for {
			m, err := p.Recv(ctx, praas.Any, key, 0)
			if err != nil {
				return out
			}
			out = append(append(out, m.Data...), '\n')
			n++
		}
	})
	return []byte(strconv.Itoa(n)), err
}

// counter adds 1 to the integer in state key "counter" and returns the new
// value.
func counter(_ context.Context, p *praas.Process, _ []byte) ([]byte, error) {
	v, err := p.UpdateState("counter", func(old []byte, _ bool) []byte {
		n, _ := strconv.Atoi(string(old))
		return []byte(strconv.Itoa(n + 1))
	})
	return v, err
}
