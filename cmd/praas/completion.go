package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Dynamic shell completion: `praas completion bash|zsh|fish|powershell`
// prints the script (cobra's), which calls `praas __complete ...` as the
// user presses TAB; the functions here answer it with the names the control
// plane knows. They give up after completionTimeout and fail silently
// (nothing offered), so a control plane that is down or slow never holds
// up the shell.

// completionTimeout bounds the control-plane calls of one completion.
const completionTimeout = 2 * time.Second

// argKind is what a positional argument names.
type argKind int

const (
	argApp  argKind = iota // an application
	argPID                 // a process of the application in the first argument
	argNone                // something not to complete from the control plane
)

// completeArgs returns a ValidArgsFunction for a command whose positional
// arguments are kinds: `praas process get APP PID` is
// completeArgs(argApp, argPID).
func (c *cli) completeArgs(kinds ...argKind) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) >= len(kinds) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		switch kinds[len(args)] {
		case argApp:
			return c.completeApps(toComplete), cobra.ShellCompDirectiveNoFileComp
		case argPID:
			return c.completePIDs(args[0], toComplete), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completionContext is the context of one completion's calls; a bad --ca
// only makes them fail, silently.
func (c *cli) completionContext() (context.Context, context.CancelFunc) {
	_ = c.loadCA()
	return context.WithTimeout(c.ctx, completionTimeout)
}

// completeApps returns the applications starting with prefix, with their
// image as the description.
func (c *cli) completeApps(prefix string) []cobra.Completion {
	ctx, cancel := c.completionContext()
	defer cancel()
	apps, err := c.client().ListApps(ctx)
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for _, a := range apps {
		if strings.HasPrefix(a.Name, prefix) {
			out = append(out, cobra.CompletionWithDesc(a.Name, "image "+a.Image))
		}
	}
	return out
}

// completePIDs returns the processes of app starting with prefix, with
// their status as the description.
func (c *cli) completePIDs(app, prefix string) []cobra.Completion {
	ctx, cancel := c.completionContext()
	defer cancel()
	procs, err := c.client().ListProcesses(ctx, app)
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for _, p := range procs {
		if strings.HasPrefix(p.PID, prefix) {
			out = append(out, cobra.CompletionWithDesc(p.PID, p.Status))
		}
	}
	return out
}

// completeKeyIDs returns the ids of app's keys ("" for the admin keys)
// starting with prefix, with their name as the description.
func (c *cli) completeKeyIDs(app, prefix string) []cobra.Completion {
	ctx, cancel := c.completionContext()
	defer cancel()
	keys, err := c.client().ListKeys(ctx, app)
	if err != nil {
		return nil
	}
	var out []cobra.Completion
	for _, k := range keys {
		if strings.HasPrefix(k.ID, prefix) {
			out = append(out, cobra.CompletionWithDesc(k.ID, k.Name))
		}
	}
	return out
}

// completePIDFlag completes --pid with the processes of the application in
// the first argument.
func (c *cli) completePIDFlag(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return c.completePIDs(args[0], toComplete), cobra.ShellCompDirectiveNoFileComp
}
