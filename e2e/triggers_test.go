package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
)

// The multi-source trigger of the builtin image: sum runs once three
// messages with the same key "sum:K" arrived and stores their total under
// "sum/K". Two invocation keys interleaved are kept apart.
func TestMultiSourceTrigger(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "multisource"
	cl.createApp(t, app, "", "a", "b", "c", "s")

	absent := func(t *testing.T, key string) {
		t.Helper()
		_, err := cl.call(app, "s", "state-get", key)
		wantErr(t, err, errs.NotFound)
	}

	t.Run("interleaved invocation keys", func(t *testing.T) {
		cl.invoke(t, app, "a", "send", "s sum:round1 1")
		cl.invoke(t, app, "a", "send", "s sum:round2 10")
		cl.invoke(t, app, "b", "send", "s sum:round1 2")
		cl.invoke(t, app, "b", "send", "s sum:round2 20")
		// Two of three messages for each key: sum has not run.
		absent(t, "sum/round1")
		absent(t, "sum/round2")

		cl.invoke(t, app, "c", "send", "s sum:round1 3")
		cl.wantState(t, app, "s", "state-get", "sum/round1", "6")
		absent(t, "sum/round2")

		cl.invoke(t, app, "c", "send", "s sum:round2 30")
		cl.wantState(t, app, "s", "state-get", "sum/round2", "60")
	})

	t.Run("trigger messages do not reach the mailbox", func(t *testing.T) {
		_, err := cl.call(app, "s", "recv", "ANY sum:round1 0")
		wantErr(t, err, errs.NotFound)
	})

	t.Run("messages from outside count too", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		for _, v := range []string{"100", "200", "300"} {
			if err := cl.c.SendMessage(ctx, app, "s", "sum:rest", []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		cl.wantState(t, app, "s", "state-get", "sum/rest", "600")
	})

	t.Run("a key is reused for the next three", func(t *testing.T) {
		for _, v := range []string{"7", "8", "9"} {
			cl.invoke(t, app, "a", "send", "s sum:again "+v)
		}
		cl.wantState(t, app, "s", "state-get", "sum/again", "24")
		for _, v := range []string{"1", "1", "1"} {
			cl.invoke(t, app, "b", "send", "s sum:again "+v)
		}
		cl.wantState(t, app, "s", "state-get", "sum/again", "3")
	})
}

// The standard trigger: every message with key "log" or "log:K" invokes the
// test image's log with the message data as input; it stores "SRC|INPUT"
// under "log/K/DATA".
func TestStandardTrigger(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "standard"
	cl.createApp(t, app, bins.testImage, "a", "b")

	cl.invoke(t, app, "a", "send", "b log:k1 m1")
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := cl.c.SendMessage(ctx, app, "b", "log:k1", []byte("m2")); err != nil {
		t.Fatal(err)
	}
	cl.invoke(t, app, "a", "send", "b log m3")
	cl.invoke(t, app, "b", "send", "b log:self m4") // to itself: no network

	for _, tc := range []struct{ key, want string }{
		{"log/k1/m1", "a|m1"},
		{"log/k1/m2", "|m2"}, // from outside: no source
		{"log//m3", "a|m3"},  // key "log": empty invocation key
		{"log/self/m4", "b|m4"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			cl.wantState(t, app, "b", "get", tc.key, tc.want)
		})
	}
	if got, want := cl.invoke(t, app, "b", "keys", "log/"), "log//m3\nlog/k1/m1\nlog/k1/m2\nlog/self/m4\n"; got != want {
		t.Fatalf("log keys = %q, want %q", got, want)
	}
	_, err := cl.call(app, "b", "recv", "ANY log:k1 0")
	wantErr(t, err, errs.NotFound)
}

// The batch trigger: the test image's batch runs once four messages
// addressed to it arrived, whatever their invocation keys, and gets them
// in arrival order with an empty key. It stores them under
// "batch/" + the first message's data.
func TestBatchTrigger(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "batch"
	cl.createApp(t, app, bins.testImage, "a", "b", "c")

	cl.invoke(t, app, "a", "send", "b batch:x d1")
	cl.invoke(t, app, "a", "send", "b batch:y d2")
	cl.invoke(t, app, "c", "send", "b batch d3")
	if got := cl.invoke(t, app, "b", "keys", "batch/"); got != "" {
		t.Fatalf("batch ran after three messages: %q", got)
	}
	cl.invoke(t, app, "a", "send", "b batch:z d4")
	cl.wantState(t, app, "b", "get", "batch/d1", "key=,a:batch:x:d1,a:batch:y:d2,c:batch:d3,a:batch:z:d4")

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	for _, d := range []string{"e5", "e6", "e7", "e8", "e9", "e10"} {
		if err := cl.c.SendMessage(ctx, app, "b", "batch:"+d, []byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	cl.wantState(t, app, "b", "get", "batch/e5", "key=,:batch:e5:e5,:batch:e6:e6,:batch:e7:e7,:batch:e8:e8")
	// e9 and e10 wait for two more.
	if got, want := cl.invoke(t, app, "b", "keys", "batch/"), "batch/d1\nbatch/e5\n"; got != want {
		t.Fatalf("batches = %q, want %q", got, want)
	}
	cl.invoke(t, app, "b", "send", "b batch e11")
	cl.invoke(t, app, "b", "send", "b batch e12")
	cl.wantState(t, app, "b", "get", "batch/e9", "key=,:batch:e9:e9,:batch:e10:e10,b:batch:e11,b:batch:e12")
}

// Triggered describes the invocation a message trigger started, not the
// ones that invocation makes: a function that a triggered function invokes
// locally (Invoke(Self, ...)) was not started by messages. The test
// image's relay, triggered by "relay:K", invokes the function its message
// names in its own process and stores the result under "relay/K".
func TestTriggeredIsNotInheritedByLocalInvoke(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "relay"
	cl.createApp(t, app, bins.testImage, "a", "b")

	// Invoked directly, trigger-info was not started by messages.
	if got, want := cl.invoke(t, app, "b", "trigger-info", ""), "ok=false key= n=0"; got != want {
		t.Fatalf("trigger-info = %q, want %q", got, want)
	}
	cl.invoke(t, app, "a", "send", "b relay:x trigger-info")
	var got string
	checkFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		var err error
		got, err = cl.call(app, "b", "get", "relay/x")
		return err
	})
	if want := "ok=false key= n=0"; got != want {
		t.Fatalf("trigger-info invoked locally by a triggered function = %q, want %q", got, want)
	}
}
