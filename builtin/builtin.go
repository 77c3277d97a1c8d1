// Package builtin is the demo image compiled into the praas binary: small
// functions that show state, messaging and triggers, used by `praas up` by
// default and by the tests.
package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/process"
)

// Name is the image name that selects this image.
const Name = "builtin"

// Image returns a new image with the demo functions.
func Image() *process.Image {
	im := process.NewImage()
	im.Register("echo", echo, process.BorrowInput())
	im.Register("counter", counter)
	im.Register("state-set", stateSet)
	im.Register("state-get", stateGet)
	im.Register("send", send)
	im.Register("call", call)
	im.Register("recv", recv)
	im.Register("sum", sum, process.MultiSource(3))
	im.Register("members", members)
	im.Register("state-fill", stateFill)
	im.Register("state-digest", stateDigest)
	im.Register("log", logLine)
	return im
}

// logLine writes its input to the process log three ways: "out: TEXT" on
// stdout, "err: TEXT" on stderr, and TEXT as the message of an info record
// of the SDK's logger.
func logLine(_ context.Context, p *process.Process, in []byte) ([]byte, error) {
	fmt.Fprintf(os.Stdout, "out: %s\n", in)
	fmt.Fprintf(os.Stderr, "err: %s\n", in)
	p.Logger("log").Info(string(in))
	return nil, nil
}

// echo returns its input unchanged.
func echo(_ context.Context, _ *process.Process, in []byte) ([]byte, error) { return in, nil }

// counter adds 1 to the integer in state key "counter" and returns the new value.
func counter(_ context.Context, p *process.Process, _ []byte) ([]byte, error) {
	var failure error
	v, err := p.UpdateState("counter", func(old []byte, ok bool) []byte {
		n := int64(0)
		if ok {
			var err error
			if n, err = strconv.ParseInt(string(old), 10, 64); err != nil {
				failure = fmt.Errorf("%w: state key counter holds %q, not an integer", errs.ErrFailedPrecondition, old)
				return old
			}
		}
		return strconv.AppendInt(nil, n+1, 10)
	})
	if failure != nil {
		return nil, failure
	}
	return v, err
}

// stateSet takes KEY=VALUE and stores VALUE under KEY.
func stateSet(_ context.Context, p *process.Process, in []byte) ([]byte, error) {
	key, value, ok := bytes.Cut(in, []byte("="))
	if !ok || len(key) == 0 {
		return nil, fmt.Errorf("%w: state-set expects KEY=VALUE", errs.ErrInvalidArgument)
	}
	return nil, p.SetState(string(key), bytes.Clone(value))
}

// stateGet takes KEY and returns its value.
func stateGet(_ context.Context, p *process.Process, in []byte) ([]byte, error) {
	v, ok := p.State(string(in))
	if !ok {
		return nil, fmt.Errorf("%w: state key %q is not set", errs.ErrNotFound, in)
	}
	return v, nil
}

// send takes "PID KEY DATA...": it sends DATA to PID's mailbox under KEY.
func send(ctx context.Context, p *process.Process, in []byte) ([]byte, error) {
	fields := strings.SplitN(string(in), " ", 3)
	if len(fields) < 2 || fields[0] == "" || fields[1] == "" {
		return nil, fmt.Errorf("%w: send expects PID KEY DATA", errs.ErrInvalidArgument)
	}
	var data []byte
	if len(fields) == 3 {
		data = []byte(fields[2])
	}
	return nil, p.Send(ctx, fields[0], fields[1], data)
}

// call invokes FUNCTION in process PID ("@self" for this one, without the
// network) with INPUT and returns its result; input "PID FUNCTION INPUT...".
func call(ctx context.Context, p *process.Process, in []byte) ([]byte, error) {
	fields := strings.SplitN(string(in), " ", 3)
	if len(fields) < 2 || fields[0] == "" || fields[1] == "" {
		return nil, fmt.Errorf("%w: call expects PID FUNCTION INPUT", errs.ErrInvalidArgument)
	}
	var input []byte
	if len(fields) == 3 {
		input = []byte(fields[2])
	}
	return p.Invoke(ctx, fields[0], fields[1], input)
}

// anyAlias is accepted by recv as the source for "any source", besides the
// SDK's spelling praas.Any ("@any").
const anyAlias = "ANY"

// recvSource maps recv's SRC argument to the source Recv takes: the SDK's
// praas.Any ("@any") and its alias ANY mean any source.
func recvSource(src string) string {
	if src == anyAlias {
		return process.Any
	}
	return src
}

// recv takes "SRC KEY [TIMEOUT_MS]" (SRC may be @any, the SDK's praas.Any,
// or its alias ANY) and returns the data of the oldest matching message,
// waiting up to the timeout (default 1000 ms).
func recv(ctx context.Context, p *process.Process, in []byte) ([]byte, error) {
	fields := strings.Fields(string(in))
	if len(fields) < 2 || len(fields) > 3 {
		return nil, fmt.Errorf("%w: recv expects SRC KEY [TIMEOUT_MS] (SRC @any for any source)", errs.ErrInvalidArgument)
	}
	src := recvSource(fields[0])
	timeout := time.Second
	if len(fields) == 3 {
		ms, err := strconv.Atoi(fields[2])
		if err != nil || ms < 0 {
			return nil, fmt.Errorf("%w: recv: TIMEOUT_MS %q is not a number of milliseconds", errs.ErrInvalidArgument, fields[2])
		}
		timeout = time.Duration(ms) * time.Millisecond
	}
	m, err := p.Recv(ctx, src, fields[1], timeout)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

// sum is triggered once three messages with key "sum:K" have arrived, each a
// decimal integer; it stores their sum in state under "sum/K".
func sum(ctx context.Context, p *process.Process, _ []byte) ([]byte, error) {
	key, msgs, ok := process.Triggered(ctx)
	if !ok {
		return nil, fmt.Errorf("%w: sum runs when three messages with key sum:KEY arrive", errs.ErrFailedPrecondition)
	}
	var total int64
	for _, m := range msgs {
		n, err := strconv.ParseInt(strings.TrimSpace(string(m.Data)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: sum: message from %q is not an integer: %q", errs.ErrInvalidArgument, m.Src, m.Data)
		}
		total += n
	}
	out := strconv.AppendInt(nil, total, 10)
	if err := p.SetState("sum/"+key, out); err != nil {
		return nil, err
	}
	return out, nil
}

// members returns the application's processes and the membership epoch as JSON.
func members(_ context.Context, p *process.Process, _ []byte) ([]byte, error) {
	return json.Marshal(p.Members())
}
