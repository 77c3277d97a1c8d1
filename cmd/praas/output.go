package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/praas-dev/praas/client"
)

// Output of the read commands. Each prints either a human view (a table, a
// line) or, with --json, the API's JSON objects: one JSON document ending in
// a newline, with the REST API's field names. A command that reads does
//
//	return c.print(v, func(w io.Writer) { ...human view of v... })
//
// so --json needs nothing more of it.

// print writes v as JSON when --json is set, else calls human with stdout.
func (c *cli) print(v any, human func(w io.Writer)) error {
	if c.json {
		return c.printJSON(v)
	}
	human(c.stdout)
	return nil
}

// say reports that a command which makes nothing to show (a deletion) is
// done, in a line for people; with --json it prints nothing, as there is
// no object, and the exit code tells the outcome.
func (c *cli) say(format string, args ...any) {
	if !c.json {
		fmt.Fprintf(c.stdout, format+"\n", args...)
	}
}

// printJSON writes v as one indented JSON document and a newline. A nil
// slice prints as [], so an empty list is a list and not null.
func (c *cli) printJSON(v any) error {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = reflect.MakeSlice(rv.Type(), 0, 0).Interface()
	}
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes a header and rows aligned in columns; rows writes lines of
// tab-separated cells.
func (c *cli) table(header string, rows func(w io.Writer)) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(tw)
	tw.Flush()
}

// fields writes label/value pairs as an aligned two-column list: the human
// view of one object.
func (c *cli) fields(pairs ...string) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	for i := 0; i+1 < len(pairs); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", pairs[i], pairs[i+1])
	}
	tw.Flush()
}

// orDash stands in for an empty cell, so columns stay aligned.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatResources shows resources as the flags take them; zero means the
// backend's default.
func formatResources(r client.Resources) string {
	var parts []string
	if r.MilliCPU != 0 {
		parts = append(parts, "cpu "+resource.NewMilliQuantity(r.MilliCPU, resource.DecimalSI).String())
	}
	if r.MemoryBytes != 0 {
		parts = append(parts, "memory "+resource.NewQuantity(r.MemoryBytes, resource.BinarySI).String())
	}
	if len(parts) == 0 {
		return "default"
	}
	return strings.Join(parts, ", ")
}

// formatBytes shows a size in bytes with a binary unit: 512 B, 1.5 MiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
