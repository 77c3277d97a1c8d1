package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func (c *cli) appCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "Manage applications"}
	var image string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an application",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			app, err := c.client().CreateApp(c.ctx, args[0], image)
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
	create.Flags().StringVar(&image, "image", "", `image the app's processes run: "builtin" (default) or the absolute path of a binary built with the praas SDK`)
	list := &cobra.Command{
		Use:   "list",
		Short: "List applications",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			apps, err := c.client().ListApps(c.ctx)
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(apps)
			}
			c.table("NAME\tIMAGE\tEPOCH\tCREATED", func(w io.Writer) {
				for _, a := range apps {
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", a.Name, a.Image, a.Epoch, a.CreatedAt.Format("2006-01-02T15:04:05Z07:00"))
				}
			})
			return nil
		},
	}
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show an application",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			app, err := c.client().GetApp(c.ctx, args[0])
			if err != nil {
				return err
			}
			return c.printJSON(app)
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an application with all its processes and their state",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := c.client().DeleteApp(c.ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "app %s deleted\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, get, del)
	return cmd
}

func (c *cli) processCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "process", Short: "Manage the processes of an application"}
	var pid string
	create := &cobra.Command{
		Use:   "create APP",
		Short: "Create a process (or bring back a swapped one) and wait until it is active",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			p, err := c.client().CreateProcess(c.ctx, args[0], pid)
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(p)
			}
			fmt.Fprintf(c.stdout, "process %s/%s %s at %s\n", p.App, p.PID, p.Status, p.Address)
			return nil
		},
	}
	create.Flags().StringVar(&pid, "pid", "", "the process id (default: chosen by the control plane)")
	list := &cobra.Command{
		Use:   "list APP",
		Short: "List an application's processes with status and data-plane address",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			procs, err := c.client().ListProcesses(c.ctx, args[0])
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(procs)
			}
			c.table("PID\tSTATUS\tADDRESS\tINVOCATIONS", func(w io.Writer) {
				for _, p := range procs {
					addr := p.Address
					if addr == "" {
						addr = "-"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", p.PID, p.Status, addr, p.Usage.Invocations)
				}
			})
			return nil
		},
	}
	get := &cobra.Command{
		Use:   "get APP PID",
		Short: "Show a process, with its data-plane address and token while active",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			p, err := c.client().GetProcess(c.ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return c.printJSON(p)
		},
	}
	swap := &cobra.Command{
		Use:   "swap APP PID",
		Short: "Swap a process out to storage; the next invocation or message brings it back",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			p, err := c.client().SwapProcess(c.ctx, args[0], args[1])
			if err != nil {
				return err
			}
			if c.json {
				return c.printJSON(p)
			}
			fmt.Fprintf(c.stdout, "process %s/%s %s\n", p.App, p.PID, p.Status)
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "delete APP PID",
		Short: "Stop a process and delete it with its state",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := c.client().DeleteProcess(c.ctx, args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "process %s/%s deleted\n", args[0], args[1])
			return nil
		},
	}
	cmd.AddCommand(create, list, get, swap, del)
	return cmd
}

// payload is the input of invoke and send: --data, --file or stdin.
type payload struct {
	data     string
	dataSet  bool
	file     string
	readFrom io.Reader
}

func (p *payload) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.data, "data", "", "the input as a string")
	cmd.Flags().StringVar(&p.file, "file", "", "read the input from a file (- for stdin)")
}

func (p *payload) read(cmd *cobra.Command, stdin io.Reader) ([]byte, error) {
	p.dataSet = cmd.Flags().Changed("data")
	switch {
	case p.dataSet && p.file != "":
		return nil, errors.New("give --data or --file, not both")
	case p.dataSet:
		return []byte(p.data), nil
	case p.file == "-":
		return io.ReadAll(stdin)
	case p.file != "":
		return os.ReadFile(p.file)
	}
	// No flag: read stdin when it is piped, not when it is a terminal.
	if f, ok := stdin.(*os.File); ok {
		fi, err := f.Stat()
		if err != nil || fi.Mode()&os.ModeCharDevice != 0 {
			return nil, nil
		}
	}
	return io.ReadAll(stdin)
}

func (c *cli) invokeCmd() *cobra.Command {
	var pid string
	var in payload
	cmd := &cobra.Command{
		Use:   "invoke APP FUNCTION",
		Short: "Invoke a function and write its raw result to stdout",
		Long: `Invoke a function of an application through the control plane and write
its raw result to stdout. With --pid the invocation goes to that process
(started or swapped in if needed); without, the control plane picks one.
The input is --data, --file, or stdin when it is piped.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			input, err := in.read(cmd, c.stdin)
			if err != nil {
				return err
			}
			res, err := c.client().InvokeControlPlane(c.ctx, args[0], pid, args[1], input)
			if err != nil {
				return err
			}
			_, err = c.stdout.Write(res.Output)
			return err
		},
	}
	cmd.Flags().StringVar(&pid, "pid", "", "the process to run in (default: any)")
	in.flags(cmd)
	return cmd
}

func (c *cli) sendCmd() *cobra.Command {
	var in payload
	cmd := &cobra.Command{
		Use:   "send APP PID KEY",
		Short: "Put a message into a process's mailbox (it may trigger an invocation)",
		Args:  cobra.ExactArgs(3),
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
