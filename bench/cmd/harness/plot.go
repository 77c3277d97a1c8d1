package main

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/praas-dev/praas/bench/internal/stats"
)

type statsSummary = stats.Summary

// series is one line of a plot: medians with their confidence intervals.
type series struct {
	name string
	x    []float64
	s    []stats.Summary
}

func (s *series) add(x float64, v stats.Summary) {
	if math.IsNaN(v.Median) {
		return
	}
	s.x = append(s.x, x)
	s.s = append(s.s, v)
}

// ciPoints are a series' medians with the CI as error bars.
type ciPoints struct{ s *series }

func (c ciPoints) Len() int                    { return len(c.s.x) }
func (c ciPoints) XY(i int) (float64, float64) { return c.s.x[i], c.s.s[i].Median }
func (c ciPoints) YError(i int) (float64, float64) {
	v := c.s.s[i]
	if math.IsNaN(v.CILow) {
		return 0, 0
	}
	return v.Median - v.CILow, v.CIHigh - v.Median
}

func (e *Env) plotPath(name string) string { return filepath.Join(e.PlotDir, name) }

// xTicks marks the x values that have data, labelled by label.
type xTicks struct {
	vals  []float64
	label func(float64) string
}

func (t xTicks) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	for _, v := range t.vals {
		if v >= lo && v <= hi {
			out = append(out, plot.Tick{Value: v, Label: t.label(v)})
		}
	}
	return out
}

// byteLabel labels a payload size in bytes; mibLabel one in MiB.
func byteLabel(v float64) string { return prettySize(int(v)) }
func mibLabel(v float64) string  { return fmt.Sprintf("%g MiB", v) }

// linePlot draws median lines with CI error bars against x, on log-log
// axes when xLabel is given (the x ticks are then the x values, labelled by
// xLabel), else on linear axes.
func linePlot(path, title, xTitle, yTitle string, xLabel func(float64) string, ss []series) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xTitle
	p.Y.Label.Text = yTitle
	if xLabel != nil {
		var xs []float64
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, s := range ss {
			for _, x := range s.x {
				if !slices.Contains(xs, x) {
					xs = append(xs, x)
				}
				lo, hi = math.Min(lo, x), math.Max(hi, x)
			}
		}
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = xTicks{vals: xs, label: xLabel}
		if lo < hi {
			p.X.Min, p.X.Max = lo/1.6, hi*2.5
		}
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	// Latency grows with x: the legend goes top left. A CDF (linear
	// axes) rises to the right: bottom right.
	p.Legend.Top = xLabel != nil
	p.Legend.Left = xLabel != nil
	var args []any
	for i := range ss {
		if len(ss[i].x) == 0 {
			continue
		}
		args = append(args, ss[i].name, ciPoints{&ss[i]})
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	for i := range ss {
		if len(ss[i].x) == 0 {
			continue
		}
		eb, err := plotter.NewYErrorBars(ciPoints{&ss[i]})
		if err != nil {
			return err
		}
		eb.Color = plotutil.Color(i)
		p.Add(eb)
	}
	p.Add(plotter.NewGrid())
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

// bar is one bar of a grouped bar chart.
type barGroup struct {
	name   string    // legend entry
	values []float64 // one per category
}

// barPlot draws grouped bars: one group per category, one bar per barGroup.
func barPlot(path, title, yLabel string, categories []string, groups []barGroup, logY bool) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	w := vg.Points(math.Max(6, 60/float64(len(groups)+1)))
	for i, g := range groups {
		vals := make(plotter.Values, len(g.values))
		for j, v := range g.values {
			if math.IsNaN(v) || (logY && v <= 0) {
				v = 0
				if logY {
					v = math.SmallestNonzeroFloat64
				}
			}
			vals[j] = v
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		b.LineStyle.Width = vg.Length(0)
		b.Color = plotutil.Color(i)
		b.Offset = vg.Length(float64(i)-float64(len(groups)-1)/2) * w
		p.Add(b)
		p.Legend.Add(g.name, b)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(categories...)
	p.X.Min, p.X.Max = -0.7, float64(len(categories))-0.3
	p.Y.Max *= 1.25 // room for the legend
	p.Add(plotter.NewGrid())
	p.BackgroundColor = color.White
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}
