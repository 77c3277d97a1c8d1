package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/proclog"
)

func (c *cli) appCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "Manage applications"}
	var image string
	var res resourceFlags
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an application",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := res.options(cmd)
			if err != nil {
				return err
			}
			app, err := c.client().CreateApp(c.ctx, args[0], image, opts...)
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(app)
			}
			fmt.Fprintf(c.stdout, "app %s created (image %s)\n", app.Name, app.Image)
			return nil
		},
	}
	res.register(create, "each process of the app")
	create.Flags().StringVar(&image, "image", "", `image the app's processes run: "builtin" (default); with the local backend the absolute path of a binary built with the praas SDK, with the kubernetes backend a container image (REGISTRY/NAME:TAG)`)
	list := &cobra.Command{
		Use:   "list",
		Short: "List applications",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			apps, err := c.client().ListApps(c.ctx)
			if err != nil {
				return err
			}
			return c.print(apps, func(io.Writer) {
				c.table("NAME\tIMAGE\tEPOCH\tCREATED", func(w io.Writer) {
					for _, a := range apps {
						fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", a.Name, a.Image, a.Epoch, a.CreatedAt.Format(time.RFC3339))
					}
				})
			})
		},
	}
	get := &cobra.Command{
		Use:               "get NAME",
		Short:             "Show an application",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeArgs(argApp),
		RunE: func(_ *cobra.Command, args []string) error {
			app, err := c.client().GetApp(c.ctx, args[0])
			if err != nil {
				return err
			}
			return c.print(app, func(io.Writer) {
				c.fields("name", app.Name, "image", app.Image, "resources", formatResources(app.Resources),
					"epoch", strconv.FormatUint(app.Epoch, 10), "created", app.CreatedAt.Format(time.RFC3339))
			})
		},
	}
	del := &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete an application with all its processes and their state",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeArgs(argApp),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := c.client().DeleteApp(c.ctx, args[0]); err != nil {
				return err
			}
			c.say("app %s deleted", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, get, del)
	return cmd
}

func (c *cli) processCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "process", Short: "Manage the processes of an application"}
	var pid string
	var res resourceFlags
	var count, parallel int
	create := &cobra.Command{
		Use:   "create APP",
		Short: "Create a process (or bring back a swapped one) and wait until it is active",
		Long: `Create a process of APP, or bring back a swapped or failed one, and wait
until it is active. --count N creates N processes, --parallel at a time:
with --pid PREFIX they are PREFIX1 to PREFIXN, else the control plane picks
their pids. On a terminal, stderr shows how many are done; the processes are
printed at the end (with --json, a list when --count is given). If one
fails, no more are started, those created are printed, and the command fails.`,
		Example: `  praas process create demo --pid p1
  praas process create demo --count 100 --pid w`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeArgs(argApp),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := res.options(cmd)
			if err != nil {
				return err
			}
			if count < 1 || parallel < 1 {
				return usagef(cmd, "--count and --parallel must be at least 1")
			}
			if !cmd.Flags().Changed("count") {
				p, err := c.client().CreateProcess(c.ctx, args[0], pid, opts...)
				if err != nil {
					return err
				}
				return c.print(p, func(w io.Writer) { printCreated(w, p) })
			}
			return c.createProcesses(args[0], pid, count, parallel, opts)
		},
	}
	create.Flags().IntVar(&count, "count", 1, "create this many processes (with --pid PREFIX: PREFIX1 to PREFIXN)")
	create.Flags().IntVar(&parallel, "parallel", 8, "with --count: how many to create at a time")
	create.Flags().StringVar(&pid, "pid", "", "the process id (default: chosen by the control plane)")
	_ = create.RegisterFlagCompletionFunc("pid", c.completePIDFlag)
	res.register(create, "this process, in place of its app's (kept from its creation on)")
	list := &cobra.Command{
		Use:               "list APP",
		Short:             "List an application's processes with status and data-plane address",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeArgs(argApp),
		RunE: func(_ *cobra.Command, args []string) error {
			procs, err := c.client().ListProcesses(c.ctx, args[0])
			if err != nil {
				return err
			}
			return c.print(procs, func(io.Writer) {
				c.table("PID\tSTATUS\tADDRESS\tINVOCATIONS", func(w io.Writer) {
					for _, p := range procs {
						fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", p.PID, p.Status, orDash(p.Address), p.Usage.Invocations)
					}
				})
			})
		},
	}
	get := &cobra.Command{
		Use:               "get APP PID",
		Short:             "Show a process, with its data-plane address and token while active",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeArgs(argApp, argPID),
		RunE: func(_ *cobra.Command, args []string) error {
			p, err := c.client().GetProcess(c.ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return c.print(p, func(io.Writer) {
				u := p.Usage
				c.fields("app", p.App, "pid", p.PID, "status", p.Status,
					"address", orDash(p.Address), "token", orDash(p.Token),
					"generation", strconv.FormatUint(p.Generation, 10), "owner", orDash(p.Owner),
					"handle", orDash(p.Handle), "snapshot", orDash(p.Snapshot), "snapshot size", formatBytes(p.SnapshotBytes),
					"resources", formatResources(p.Resources),
					"usage", fmt.Sprintf("%d invocations, %s busy, %d bytes in, %d bytes out",
						u.Invocations, time.Duration(u.BusyNanos), u.BytesIn, u.BytesOut),
					"created", p.CreatedAt.Format(time.RFC3339), "updated", p.UpdatedAt.Format(time.RFC3339),
					"last active", p.LastActive.Format(time.RFC3339))
			})
		},
	}
	swap := &cobra.Command{
		Use:               "swap APP PID",
		Short:             "Swap a process out to storage; the next invocation or message brings it back",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeArgs(argApp, argPID),
		RunE: func(_ *cobra.Command, args []string) error {
			prog := c.progress(fmt.Sprintf("swapping %s/%s out", args[0], args[1]))
			p, err := c.client().SwapProcess(c.ctx, args[0], args[1])
			elapsed := prog.end()
			if err != nil {
				return err
			}
			return c.print(p, func(w io.Writer) {
				took := elapsed.Round(time.Millisecond).String()
				if p.SnapshotBytes > 0 {
					took += ", snapshot " + formatBytes(p.SnapshotBytes)
				}
				fmt.Fprintf(w, "process %s/%s %s (%s)\n", p.App, p.PID, p.Status, took)
			})
		},
	}
	del := &cobra.Command{
		Use:               "delete APP PID",
		Short:             "Stop a process and delete it with its state",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeArgs(argApp, argPID),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := c.client().DeleteProcess(c.ctx, args[0], args[1]); err != nil {
				return err
			}
			c.say("process %s/%s deleted", args[0], args[1])
			return nil
		},
	}
	cmd.AddCommand(create, list, get, swap, del, c.processLogsCmd())
	return cmd
}

// logsFlags are the flags of praas logs (and praas process logs).
type logsFlags struct {
	follow bool
	since  string
	tail   int
}

func (f *logsFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&f.follow, "follow", "f", false, "keep printing new lines as the process writes them (across swaps) until interrupted")
	cmd.Flags().StringVar(&f.since, "since", "", "only lines since a time (RFC 3339, e.g. 2026-01-02T15:04:05Z) or for a duration back (e.g. 10m)")
	cmd.Flags().IntVar(&f.tail, "tail", 0, "only the last N lines of what is kept (then new ones with --follow)")
}

// logsHelp explains praas logs.
const logsHelp = `Print the log of a process: what it wrote to stdout and stderr (its
functions' output, the SDK's logger, the runtime's own messages), one line
each as TIME STREAM LINE, TIME in UTC with nanoseconds, STREAM stdout, stderr
or praas (lines the platform adds, such as a count of lines dropped). The
log covers the process's swaps and restarts. --json prints JSON lines
{"time", "stream", "line"}.`

// logsCmd is praas logs APP PID.
func (c *cli) logsCmd() *cobra.Command {
	var f logsFlags
	cmd := &cobra.Command{
		Use:   "logs APP PID",
		Short: "Print a process's log",
		Long:  logsHelp,
		Example: `  praas logs demo p1
  praas logs demo p1 --since 10m --tail 100
  praas logs demo p1 -f`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeArgs(argApp, argPID),
		RunE:              func(cmd *cobra.Command, args []string) error { return c.printLogs(cmd, args[0], args[1], f) },
	}
	f.add(cmd)
	return cmd
}

// printLogs prints the log of app/pid through the REST API.
func (c *cli) printLogs(cmd *cobra.Command, app, pid string, f logsFlags) error {
	opts := client.LogsOptions{Tail: f.tail, Follow: f.follow}
	if f.tail < 0 {
		return usagef(cmd, "--tail %d: a number of lines", f.tail)
	}
	if f.since != "" {
		if t, err := time.Parse(time.RFC3339Nano, f.since); err == nil {
			opts.Since = t
		} else if d, err := time.ParseDuration(f.since); err == nil && d > 0 {
			opts.SinceAgo = d
		} else {
			return usagef(cmd, "--since %q: a time such as 2026-01-02T15:04:05Z or a duration such as 10m", f.since)
		}
	}
	var buf []byte
	enc := json.NewEncoder(c.stdout)
	return c.client().Logs(c.ctx, app, pid, opts, func(l client.LogLine) error {
		if c.json {
			return enc.Encode(l)
		}
		buf = proclog.AppendText(buf[:0], l)
		_, err := c.stdout.Write(buf)
		return err
	})
}

// processLogsCmd is praas logs under praas process, which can also read a
// process's raw output file on the control plane's machine.
func (c *cli) processLogsCmd() *cobra.Command {
	var f logsFlags
	var data string
	var raw, pathOnly bool
	cmd := &cobra.Command{
		Use:   "logs APP PID",
		Short: "Print a process's log (as praas logs), or its raw output file",
		Long: logsHelp + `

--raw reads the raw output file instead, on the machine that runs praas up
with the local backend: DATA/logs/APP/PID.out, where DATA is the --data
directory of praas up (default ./.praas; giving --data implies --raw). It
holds the same stamped lines and also what a crash prints. With --raw,
--follow keeps printing what is appended (and waits for the file if the
process has not started yet); --path prints the file's path.`,
		Example: `  praas process logs demo p1 -f
  praas process logs demo p1 --raw --data /var/lib/praas --follow
  less "$(praas process logs demo p1 --path)"`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeArgs(argApp, argPID),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !raw && !pathOnly && !cmd.Flags().Changed("data") {
				return c.printLogs(cmd, args[0], args[1], f)
			}
			if f.since != "" || f.tail != 0 {
				return usagef(cmd, "--since and --tail read the log through the control plane: not with --raw")
			}
			path, err := logPath(data, args[0], args[1])
			if err != nil {
				return err
			}
			if pathOnly {
				_, err := fmt.Fprintln(c.stdout, path)
				return err
			}
			return c.printLog(path, f.follow)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&raw, "raw", false, "read the raw output file under --data instead of asking the control plane")
	cmd.Flags().StringVar(&data, "data", "./.praas", "with --raw: the --data directory of praas up")
	cmd.Flags().BoolVar(&pathOnly, "path", false, "print the path of the raw output file instead of its contents")
	return cmd
}

// logPath returns the absolute path of the raw output of app/pid under the
// data directory: DATA/logs/APP/PID.out, as the local backend writes it.
func logPath(data, app, pid string) (string, error) {
	for _, name := range []string{app, pid} {
		if name == "" || name[0] == '.' || strings.ContainsAny(name, `/\`) {
			return "", fmt.Errorf("%q is not an app name or pid", name)
		}
	}
	return filepath.Abs(filepath.Join(data, "logs", app, pid+".out"))
}

// logPoll is how often --follow looks for more log.
const logPoll = 200 * time.Millisecond

// printLog copies the log at path to stdout; with follow it then keeps
// copying what is appended until the context ends, starting over when the
// file is truncated or replaced.
func (c *cli) printLog(path string, follow bool) error {
	tick := time.NewTicker(logPoll)
	defer tick.Stop()
	wait := func() bool {
		select {
		case <-c.ctx.Done():
			return false
		case <-tick.C:
			return true
		}
	}
	f, err := os.Open(path)
	for follow && errors.Is(err, fs.ErrNotExist) {
		if !wait() {
			return nil
		}
		f, err = os.Open(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no log at %s: is --data the directory of praas up, and has the process started?", path)
	}
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	var off int64
	for {
		n, err := io.Copy(c.stdout, f)
		off += n
		if err != nil || !follow {
			return err
		}
		if !wait() {
			return nil
		}
		cur, err := f.Stat()
		if err != nil {
			return err
		}
		if now, err := os.Stat(path); err == nil && !os.SameFile(cur, now) {
			// Replaced (the process was deleted and created again): read the new file.
			g, err := os.Open(path)
			if err == nil {
				f.Close()
				f, off = g, 0
			}
		} else if cur.Size() < off {
			// Truncated: start over.
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			off = 0
		}
	}
}

// payload is the input of invoke and send: --data or --file, either of them
// "-" for stdin. Stdin is read only when asked for, never implicitly: a
// terminal or a pipe that nobody writes to would make the command hang.
type payload struct {
	data string
	file string
}

// payloadHelp explains the input flags in the commands' --help.
const payloadHelp = `The input is --data STRING or --file PATH; "--data -" or "--file -" reads
it from stdin, to its end. Without either flag the input is empty: stdin is
only read when asked for, so a terminal or an idle pipe cannot make praas
wait. (To send a lone "-", put it in a file or pipe it with --data -.)`

func (p *payload) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.data, "data", "", `the input as a string ("-": read it from stdin)`)
	cmd.Flags().StringVar(&p.file, "file", "", `read the input from a file ("-": from stdin)`)
}

func (p *payload) read(cmd *cobra.Command, stdin io.Reader) ([]byte, error) {
	dataSet, fileSet := cmd.Flags().Changed("data"), cmd.Flags().Changed("file")
	switch {
	case dataSet && fileSet:
		return nil, usagef(cmd, "give --data or --file, not both")
	case dataSet && p.data == "-", fileSet && p.file == "-":
		return io.ReadAll(stdin)
	case dataSet:
		return []byte(p.data), nil
	case fileSet && p.file == "":
		return nil, usagef(cmd, "--file needs a path (or - for stdin)")
	case fileSet:
		return os.ReadFile(p.file)
	}
	return nil, nil
}

// result is where invoke writes its output: stdout, or the file of --out.
type result struct {
	raw  bool
	file string
}

func (r *result) flags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&r.raw, "raw", false, "write the result exactly as returned, without the newline added at a terminal")
	cmd.Flags().StringVar(&r.file, "out", "", "write the result, exactly as returned, to this file instead of stdout")
}

// write writes out as it is; at a terminal, unless --raw, it ends a
// non-empty result that lacks one with a newline, so the prompt starts on
// a line of its own.
func (r *result) write(c *cli, out []byte) error {
	if r.file != "" {
		return os.WriteFile(r.file, out, 0o644)
	}
	if _, err := c.stdout.Write(out); err != nil {
		return err
	}
	if !r.raw && len(out) > 0 && out[len(out)-1] != '\n' && c.isTerminal(c.stdout) {
		_, err := io.WriteString(c.stdout, "\n")
		return err
	}
	return nil
}

func (c *cli) invokeCmd() *cobra.Command {
	var pid string
	var in payload
	var res result
	cmd := &cobra.Command{
		Use:   "invoke APP FUNCTION",
		Short: "Invoke a function and write its result to stdout",
		Long: `Invoke a function of an application through the control plane and write
its result to stdout. With --pid the invocation goes to that process
(started or swapped in if needed); without, the control plane picks one.

` + payloadHelp + `

The result is written byte for byte. Only when stdout is a terminal, and the
result does not end with a newline, is one added after it; --raw leaves it
out there too, and --out FILE writes the result to FILE instead of stdout.`,
		Example: `  praas invoke demo counter --pid p1
  praas invoke demo state-get --pid p1 --data k
  echo -n hello | praas invoke demo echo --pid p1 --data -
  praas invoke demo state-get --pid p1 --data blob --out blob.bin`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeArgs(argApp, argNone),
		RunE: func(cmd *cobra.Command, args []string) error {
			input, err := in.read(cmd, c.stdin)
			if err != nil {
				return err
			}
			out, err := c.client().InvokeControlPlane(c.ctx, args[0], pid, args[1], input)
			if err != nil {
				return err
			}
			return res.write(c, out.Output)
		},
	}
	cmd.Flags().StringVar(&pid, "pid", "", "the process to run in (default: any)")
	_ = cmd.RegisterFlagCompletionFunc("pid", c.completePIDFlag)
	in.flags(cmd)
	res.flags(cmd)
	return cmd
}

func (c *cli) sendCmd() *cobra.Command {
	var in payload
	cmd := &cobra.Command{
		Use:   "send APP PID KEY",
		Short: "Put a message into a process's mailbox (it may trigger an invocation)",
		Long: `Put a message with KEY into the mailbox of process PID of APP, through the
control plane. It may trigger an invocation of a function that waits for
messages with KEY.

` + payloadHelp,
		Example: `  praas send demo b sum:round1 --data 1
  date | praas send demo b log:now --data -`,
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: c.completeArgs(argApp, argPID, argNone),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := in.read(cmd, c.stdin)
			if err != nil {
				return err
			}
			return c.client().SendMessage(c.ctx, args[0], args[1], args[2], data)
		},
	}
	in.flags(cmd)
	return cmd
}
