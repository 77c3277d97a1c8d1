package main

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/praas-dev/praas/bench/internal/stats"
)

// Measure is one line of bench/results/latest.json. Median, P99 and the CI
// are in Unit; Baseline is the baseline's median in the same unit and Ratio
// is Median / Baseline. A measure that could not be taken has nil numbers
// and says why in Unavailable.
type Measure struct {
	Name        string      `json:"name"`
	Unit        string      `json:"unit"`
	Median      *float64    `json:"median"`
	P99         *float64    `json:"p99"`
	CI99        *[2]float64 `json:"ci99_median,omitempty"`
	N           int         `json:"n"`
	Baseline    *float64    `json:"baseline,omitempty"`
	BaselineOf  string      `json:"baseline_of,omitempty"`
	Ratio       *float64    `json:"ratio,omitempty"`
	Unavailable string      `json:"unavailable,omitempty"`
}

func num(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// measure makes a measure from a summary.
func measure(name, unit string, s stats.Summary) Measure {
	m := Measure{Name: name, Unit: unit, Median: num(s.Median), P99: num(s.P99), N: s.N}
	if !math.IsNaN(s.CILow) {
		m.CI99 = &[2]float64{s.CILow, s.CIHigh}
	}
	return m
}

// versus makes a measure of s against the baseline b: ratio = s / b.
func versus(name, unit string, s stats.Summary, baselineOf string, b stats.Summary) Measure {
	m := measure(name, unit, s)
	m.Baseline = num(b.Median)
	m.BaselineOf = baselineOf
	m.Ratio = num(s.Median / b.Median)
	return m
}

func unavailable(name, unit, why string) Measure {
	return Measure{Name: name, Unit: unit, Unavailable: why}
}

// Section is one experiment on the page.
type Section struct {
	Num   int
	Title string
	// Text is markdown paragraphs before the tables.
	Text []string
	// Tables and Notes follow.
	Tables []Table
	Notes  []string
	// Plot is the SVG file name under the plots directory, if any.
	Plot string
	// Failed is set when the experiment could not run at all.
	Failed string
	Took   time.Duration
}

// Table is a markdown table.
type Table struct {
	Title string
	Head  []string
	Rows  [][]string
}

func (t *Table) add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Samples are the raw values of one series, keyed by name.
type Samples map[string][]float64

func (s Samples) add(name string, v float64) { s[name] = append(s[name], v) }

func (s Samples) sum(name string) stats.Summary { return stats.Summarize(s[name]) }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fmtVal prints a value with 3 significant digits, or "–" for NaN.
func fmtVal(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "–"
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.3g", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func fmtCI(s stats.Summary) string {
	if math.IsNaN(s.CILow) {
		return "–"
	}
	return fmtVal(s.CILow) + " – " + fmtVal(s.CIHigh)
}

func fmtRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "–"
	}
	if r >= 10 {
		return fmt.Sprintf("%.1f×", r)
	}
	return fmt.Sprintf("%.3f×", r)
}

// sizeLabel names a payload size: 1B, 1KiB, 64KiB, 1MiB, 16MiB.
func sizeLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// prettySize is sizeLabel with a space, for tables.
func prettySize(n int) string {
	l := sizeLabel(n)
	i := strings.IndexFunc(l, func(r rune) bool { return r < '0' || r > '9' })
	return l[:i] + " " + l[i:]
}
