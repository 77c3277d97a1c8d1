package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/errs"
)

func (c *cli) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the platform at a glance: control planes, apps, processes by status, store health",
		Long: `Show what the control plane at $PRAAS_ENDPOINT sees: the control-plane replicas
sharing its metadata store and whether their leases hold, the number of
applications, the processes by status, and whether the metadata and swap
stores answer. The exit status is 7 (retryable) if a store does not answer. With an
application's key, the counts are those of that application.`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			st, err := c.client().Status(c.ctx)
			if err != nil {
				return err
			}
			if err := c.print(st, func(io.Writer) { c.printStatus(st) }); err != nil {
				return err
			}
			return unhealthy(st)
		},
	}
}

// unhealthy is the error of a status whose stores do not both answer.
func unhealthy(st client.Status) error {
	var bad []string
	if !st.MetadataStore.Healthy {
		bad = append(bad, "the metadata store is unhealthy: "+st.MetadataStore.Error)
	}
	if !st.SwapStore.Healthy {
		bad = append(bad, "the swap store is unhealthy: "+st.SwapStore.Error)
	}
	if len(bad) == 0 {
		return nil
	}
	// Unavailable: exit 7, retryable, as for a control plane that is down.
	return errs.New(errs.Unavailable, strings.Join(bad, "; "))
}

func (c *cli) printStatus(st client.Status) {
	live := 0
	for _, r := range st.Replicas {
		if r.Live {
			live++
		}
	}
	c.table("control plane\t"+st.Replica+" (version "+st.Version+")", func(w io.Writer) {
		fmt.Fprintf(w, "replicas\t%d live of %d\n", live, len(st.Replicas))
		now := time.Now()
		for _, r := range st.Replicas {
			state := "live"
			if !r.Live {
				state = "expired"
				if !r.Expires.IsZero() {
					state += " " + now.Sub(r.Expires).Round(time.Second).String() + " ago"
				}
			}
			fmt.Fprintf(w, "  %s\t%s  %s\n", r.ID, r.URL, state)
		}
		fmt.Fprintf(w, "apps\t%d\n", st.Apps)
		fmt.Fprintf(w, "processes\t%s\n", processCounts(st))
		fmt.Fprintf(w, "metadata store\t%s\n", storeLine(st.MetadataStore))
		fmt.Fprintf(w, "swap store\t%s\n", storeLine(st.SwapStore))
	})
}

// processCounts is "12: 5 active, 6 swapped, 1 failed", busiest first.
func processCounts(st client.Status) string {
	statuses := make([]string, 0, len(st.Processes))
	for s := range st.Processes {
		statuses = append(statuses, s)
	}
	slices.SortFunc(statuses, func(a, b string) int {
		if d := st.Processes[b] - st.Processes[a]; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(statuses))
	for _, s := range statuses {
		parts = append(parts, fmt.Sprintf("%d %s", st.Processes[s], s))
	}
	if len(parts) == 0 {
		return "0"
	}
	return fmt.Sprintf("%d: %s", st.TotalProcesses, strings.Join(parts, ", "))
}

func storeLine(h client.StoreHealth) string {
	switch {
	case !h.Configured:
		return "none"
	case !h.Healthy:
		return "UNHEALTHY: " + h.Error
	}
	return "ok (" + time.Duration(h.LatencyNanos).Round(time.Microsecond).String() + ")"
}
