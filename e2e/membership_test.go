package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/praas-dev/praas/store"
)

type membership struct {
	Epoch   uint64 `json:"epoch"`
	Members []struct {
		PID     string `json:"pid"`
		Status  string `json:"status"`
		Address string `json:"address"`
	} `json:"members"`
}

// Membership: the builtin members function shows the app's processes and
// epoch; the epoch grows with every process created or deleted, and an
// active process learns of a change within a second.
func TestMembership(t *testing.T) {
	t.Parallel()
	cl := newCluster(t)
	const app = "members"
	cl.createApp(t, app, "", "a", "b")

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	appEpoch := func() uint64 {
		t.Helper()
		a, err := cl.c.GetApp(ctx, app)
		if err != nil {
			t.Fatal(err)
		}
		return a.Epoch
	}
	// members polls a until its view has at least epoch and check accepts it.
	members := func(within time.Duration, epoch uint64, check func(membership, map[string]string) error) membership {
		t.Helper()
		var m membership
		checkFor(t, within, 10*time.Millisecond, func() error {
			out, err := cl.call(app, "a", "members", "")
			if err != nil {
				return err
			}
			m = membership{}
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				return fmt.Errorf("members returned %q: %w", out, err)
			}
			if m.Epoch < epoch {
				return fmt.Errorf("a knows epoch %d, the app is at %d", m.Epoch, epoch)
			}
			status := make(map[string]string)
			for _, mem := range m.Members {
				status[mem.PID] = mem.Status
				if mem.Status == store.StatusActive && mem.Address == "" {
					return fmt.Errorf("active member %s without an address: %s", mem.PID, out)
				}
			}
			return check(m, status)
		})
		return m
	}
	active := func(pids ...string) func(membership, map[string]string) error {
		return func(_ membership, status map[string]string) error {
			for _, pid := range pids {
				if status[pid] != store.StatusActive {
					return fmt.Errorf("member %s is %q, want active (%v)", pid, status[pid], status)
				}
			}
			return nil
		}
	}

	e0 := appEpoch()
	m0 := members(5*time.Second, e0, active("a", "b"))
	if m0.Epoch != e0 {
		t.Fatalf("a's epoch %d, the app's %d", m0.Epoch, e0)
	}

	if _, err := cl.c.CreateProcess(ctx, app, "c"); err != nil {
		t.Fatal(err)
	}
	e1 := appEpoch()
	if e1 <= e0 {
		t.Fatalf("epoch %d after creating c, was %d", e1, e0)
	}
	m1 := members(time.Second, e1, active("a", "b", "c"))
	if m1.Epoch <= m0.Epoch {
		t.Fatalf("members epoch %d after creating c, was %d", m1.Epoch, m0.Epoch)
	}

	if err := cl.c.DeleteProcess(ctx, app, "c"); err != nil {
		t.Fatal(err)
	}
	e2 := appEpoch()
	if e2 <= e1 {
		t.Fatalf("epoch %d after deleting c, was %d", e2, e1)
	}
	m2 := members(time.Second, e2, func(m membership, status map[string]string) error {
		if _, ok := status["c"]; ok {
			return fmt.Errorf("c is still a member: %v", status)
		}
		return active("a", "b")(m, status)
	})
	if m2.Epoch <= m1.Epoch {
		t.Fatalf("members epoch %d after deleting c, was %d", m2.Epoch, m1.Epoch)
	}
}
