package memory_test

import (
	"testing"

	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/memory"
	"github.com/praas-dev/praas/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.RunMetadata(t, func(t *testing.T) store.Metadata { return memory.New() })
}

// TestNoAliasing checks that message data going in or coming out is a copy.
func TestNoAliasing(t *testing.T) {
	ctx := t.Context()
	m := memory.New()
	if err := m.CreateApp(ctx, store.App{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateProcess(ctx, store.Process{App: "web", PID: "p1"}); err != nil {
		t.Fatal(err)
	}
	data := []byte("hello")
	if _, err := m.AppendBackup(ctx, "web", "p1", store.Message{Data: data}); err != nil {
		t.Fatal(err)
	}
	data[0] = 'J' // the caller reuses its buffer
	msgs, err := m.ListBackup(ctx, "web", "p1")
	if err != nil {
		t.Fatal(err)
	}
	msgs[0].Data[1] = 'A' // the caller scribbles on what it got
	msgs, err = m.ListBackup(ctx, "web", "p1")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(msgs[0].Data); got != "hello" {
		t.Errorf("stored message data = %q, want %q", got, "hello")
	}
}
