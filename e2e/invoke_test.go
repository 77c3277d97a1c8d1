package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
)

// Process-to-process invocations with the test image's call ("PID FUNCTION
// INPUT", PID "self" for Process.Invoke(Self, ...)).
func TestProcessInvoke(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "invoke"
	cl.createApp(t, app, bins.testImage, "a", "b")

	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	for _, tc := range []struct {
		name, input, want string
		code              errs.Code // of the error, if one is wanted
		msgs              []string
	}{
		{name: "remote echo", input: "b echo hello", want: "hello"},
		{name: "remote runs in the peer", input: "b whoami", want: "b"},
		{name: "remote with a large payload", input: "b echo " + big, want: big},
		{name: "remote and back", input: "b call a whoami", want: "a"},
		{name: "local with Self", input: "self whoami", want: "a"},
		{name: "local with its own pid", input: "a whoami", want: "a"},
		{name: "local echo", input: "self echo here", want: "here"},
		{name: "remote unknown function", input: "b nosuch", code: errs.NotFound, msgs: []string{`function "nosuch"`}},
		{name: "local unknown function", input: "self nosuch", code: errs.NotFound, msgs: []string{`function "nosuch"`}},
		{name: "unknown pid", input: "zz echo x", code: errs.NotFound, msgs: []string{`no process "zz"`}},
		{name: "another app", input: "other/b echo x", code: errs.PermissionDenied, msgs: []string{"own application"}},
		{name: "remote error comes back", input: "b get no-such-key", code: errs.NotFound, msgs: []string{`state key "no-such-key" is not set`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cl.call(app, "a", "call", tc.input)
			if tc.code != errs.Unknown {
				wantErr(t, err, tc.code, tc.msgs...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("call %.40q = %.40q (%d bytes), want %.40q (%d bytes)", tc.input, got, len(got), tc.want, len(tc.want))
			}
		})
	}
}

// A chain of dependent invocations pipelined on one data-plane connection
// from Client.DataConn: each append waits for the previous one (After),
// although earlier ones sleep longer, and a last get waits for all.
func TestPipelinedChain(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "chain"
	cl.createApp(t, app, bins.testImage)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	dc, err := cl.c.DataConn(ctx, app, "p") // creates p
	if err != nil {
		t.Fatal(err)
	}
	if dc.App != app || dc.PID != "p" {
		t.Fatalf("connected to %s/%s, want %s/p", dc.App, dc.PID, app)
	}

	const n = 8
	var calls []*client.Call
	var ids []uint64
	for i := range n {
		var after []uint64
		if i > 0 {
			after = []uint64{ids[i-1]}
		}
		// Sleep less the later the call: without After they would finish in reverse.
		c, err := dc.Go("append", fmt.Appendf(nil, "%d %d", (n-i)*10, i), after...)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
		ids = append(ids, c.ID)
	}
	last, err := dc.Go("get", []byte("chain"), ids...)
	if err != nil {
		t.Fatal(err)
	}

	want := ""
	for i, c := range calls {
		want += fmt.Sprint(i)
		got, err := c.Wait(ctx)
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if string(got) != want {
			t.Fatalf("append %d returned %q, want %q", i, got, want)
		}
	}
	got, err := last.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("get after the chain = %q, want %q", got, want)
	}

	// After naming a call that already finished does not wait.
	c, err := dc.Go("append", []byte("0 z"), ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Wait(ctx); err != nil || string(got) != want+"z" {
		t.Fatalf("append after a finished call = %q, %v", got, err)
	}

	// The same process through Client.Invoke sees the same state.
	if got := cl.invoke(t, app, "p", "get", "chain"); got != want+"z" {
		t.Fatalf("get through Invoke = %q", got)
	}
}
