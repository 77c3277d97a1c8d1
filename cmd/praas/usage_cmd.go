package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/praas-dev/praas/client"
)

func (c *cli) usageCmd() *cobra.Command {
	var since, until, pid string
	cmd := &cobra.Command{
		Use:   "usage APP",
		Short: "Show what an application's processes used (invocations, compute, state and swap storage, bytes)",
		Long: `Show an application's usage, per process and in total: invocations, compute
time, memory-time of state, data-plane bytes in and out, swap storage held
now and over time (see docs/observability.md, "Usage and billing").

Without --since and --until: the totals since each process was created.
With either: the usage in that window, widened to whole usage buckets
(deleted processes included). Each takes an RFC 3339 time
(2026-01-02T15:04:05Z) or a duration meaning that long ago (90m, 24h).`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeArgs(argApp),
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			var opts client.UsageOptions
			var err error
			if opts.Since, err = timeOrAgo("--since", since, now); err != nil {
				return usagef(cmd, "%v", err)
			}
			if opts.Until, err = timeOrAgo("--until", until, now); err != nil {
				return usagef(cmd, "%v", err)
			}
			opts.PID = pid
			u, err := c.client().Usage(c.ctx, args[0], opts)
			if err != nil {
				return err
			}
			return c.print(u, func(w io.Writer) { c.printUsage(w, u) })
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "start of the window: an RFC 3339 time or a duration ago (e.g. 24h)")
	cmd.Flags().StringVar(&until, "until", "", "end of the window: an RFC 3339 time or a duration ago (default: now)")
	cmd.Flags().StringVar(&pid, "pid", "", "only this process")
	_ = cmd.RegisterFlagCompletionFunc("pid", c.completePIDFlag)
	return cmd
}

// timeOrAgo parses an RFC 3339 time, or a duration meaning that long before
// now; empty is the zero time.
func timeOrAgo(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or a positive duration ago (24h)", flag, s)
	}
	return now.Add(-d), nil
}

func (c *cli) printUsage(w io.Writer, u client.AppUsage) {
	const layout = "2006-01-02T15:04:05Z07:00"
	if u.Windowed {
		fmt.Fprintf(w, "app %s, %s to %s (%ds buckets)\n", u.App, u.Since.Format(layout), u.Until.Format(layout), u.BucketSeconds)
	} else {
		fmt.Fprintf(w, "app %s, totals since creation (%s) to %s\n", u.App, u.Since.Format(layout), u.Until.Format(layout))
	}
	c.table("PID\tSTATUS\tINVOCATIONS\tCOMPUTE_S\tSTATE_GIB_S\tBYTES_IN\tBYTES_OUT\tSWAP_HELD\tSWAP_GIB_S", func(w io.Writer) {
		row := func(pid, status string, f client.UsageFigures) {
			fmt.Fprintf(w, "%s\t%s\t%d\t%.3f\t%.6f\t%d\t%d\t%d\t%.6f\n", pid, status, f.Invocations, f.ComputeSeconds,
				f.StateGiBSeconds, f.BytesIn, f.BytesOut, f.SwapBytesHeld, f.SwapGiBSeconds)
		}
		for _, p := range u.Processes {
			row(p.PID, p.Status, p.UsageFigures)
		}
		row("TOTAL", "", u.Totals)
	})
}
