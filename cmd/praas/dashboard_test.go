package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/praas-dev/praas/internal/testenv"
)

// The dashboard end to end, in headless Chromium: a real control plane
// (auth on) with processes active, swapped, failed (its OS process killed)
// and allocating (an image that never registers); the page asks for the
// key, lists every process with its status, shows a swap made through the
// API while it is open without a reload (through the event stream), and
// its full-page screenshot is a plausible PNG, kept as a test artifact.
// A process caught swapping out or in is not covered: those states last
// milliseconds.
func TestDashboard(t *testing.T) {
	browser := testenv.Chromium(t)
	startControlPlane(t, t.TempDir(), "--heartbeat-timeout", "2s", "--isolation", "none", "--start-timeout", "5m")
	c := testClient()
	ctx := context.Background()

	mustPraas(t, "", "app", "create", "demo")
	for _, pid := range []string{"busy", "resting", "crashed", "target"} {
		mustPraas(t, "", "process", "create", "demo", "--pid", pid)
	}
	for i := 0; i < 5; i++ {
		mustPraas(t, "", "invoke", "demo", "counter", "--pid", "busy")
	}
	mustPraas(t, "", "process", "swap", "demo", "resting")
	osPid, err := osPID(processStatus(t, "demo", "crashed").Handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(osPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "crashed marked failed", func() bool { return processStatus(t, "demo", "crashed").Status == "failed" })

	// An image that never registers keeps its process allocating until the
	// start timeout (longer than the test); it is deleted before the
	// control plane stops.
	never := filepath.Join(t.TempDir(), "never-registers")
	if err := os.WriteFile(never, []byte("#!/bin/sh\nexec sleep 300\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustPraas(t, "", "app", "create", "stuck", "--image", never)
	createCtx, stopCreate := context.WithCancel(ctx)
	go func() { _, _ = c.CreateProcess(createCtx, "stuck", "waiting") }()
	t.Cleanup(func() {
		stopCreate()
		_ = c.DeleteProcess(context.Background(), "stuck", "waiting")
	})
	waitFor(t, 10*time.Second, "stuck/waiting recorded", func() bool {
		p, err := c.GetProcess(ctx, "stuck", "waiting")
		return err == nil && p.Status == "allocating"
	})

	page, problems := openBrowser(t, browser)
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(page, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) bool {
		t.Helper()
		v, err := chromedp.Run(page, chromedp.Evaluate[bool](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}

	// Auth is on: the page asks for the key once.
	do("open /ui", chromedp.Navigate(endpoint()+"/ui"))
	do("wait for the key prompt", chromedp.WaitVisible(chromedp.CSS("#key")))
	do("type the key", chromedp.SendKeys(chromedp.CSS("#key"), token()))
	do("submit", chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)))
	do("wait for the dashboard", chromedp.WaitVisible(chromedp.CSS("#main")))
	want := map[string]string{"demo/busy": "active", "demo/resting": "swapped", "demo/crashed": "failed",
		"demo/target": "active", "stuck/waiting": "allocating"}
	waitForPage(t, page, "every process with its status", func(rows map[string]pageRow) bool {
		for k, status := range want {
			if rows[k].Status != status || rows[k].Badge != status {
				return false
			}
		}
		return true
	})
	// An active process's state size and mailbox come with its heartbeats.
	waitForPage(t, page, "demo/busy's state size and mailbox", func(rows map[string]pageRow) bool {
		r := rows["demo/busy"]
		return strings.HasSuffix(r.State, " B") && r.Mailbox == "0"
	})
	rows := pageRows(t, page)
	if r := rows["demo/busy"]; r.Invocations != "5" || r.Address == "–" || r.Generation != "1" {
		t.Fatalf("demo/busy shows %+v: want 5 invocations, an address, generation 1", r)
	}
	if r := rows["demo/resting"]; r.State == "–" || r.Address != "–" {
		t.Fatalf("demo/resting shows %+v: want its snapshot's size and no address", r)
	}
	// The app's billed usage, from GET /v1/apps/demo/usage.
	usageText := func() string {
		v, err := chromedp.Run(page, chromedp.Evaluate[string](`document.querySelector('article[data-app="demo"] .usage')?.textContent || '(none)'`))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	deadline := time.Now().Add(30 * time.Second)
	for !regexp.MustCompile(`invocations 5(\D|$)`).MatchString(usageText()) {
		if time.Now().After(deadline) {
			t.Fatalf("demo's usage line says %q, want 5 invocations", usageText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, 30*time.Second, "event stream live", func() bool { return eval(`document.body.dataset.stream === 'live'`) })

	// A swap made elsewhere shows without a reload: the marker set on this
	// document survives, and the swap is in the list of recent swaps,
	// which only the event stream fills.
	eval(`window.notReloaded = true`)
	swapped, err := c.SwapProcess(ctx, "demo", "target")
	if err != nil {
		t.Fatal(err)
	}
	snapshotSize := fmt.Sprintf("%d B", swapped.SnapshotBytes)
	waitForPage(t, page, "demo/target swapped, its snapshot's size as its state", func(rows map[string]pageRow) bool {
		r := rows["demo/target"]
		return r.Status == "swapped" && r.Badge == "swapped" && r.Address == "–" && r.State == snapshotSize && r.Mailbox == "–"
	})
	if !eval(`window.notReloaded === true`) {
		t.Fatal("the page was reloaded")
	}
	waitFor(t, 30*time.Second, "the swap of demo/target among the recent swaps", func() bool {
		return eval(`document.querySelector('#swaps li[data-type="process.swapped_out"][data-app="demo"][data-pid="target"]') !== null`)
	})
	if !eval(`document.querySelector('#swaps li[data-type="process.failed"][data-app="demo"][data-pid="crashed"]') !== null`) {
		t.Fatal("the failure of demo/crashed is not among the recent swaps and failures")
	}
	bars, err := chromedp.Run(page, chromedp.Evaluate[int](`document.querySelectorAll('article[data-app="demo"] svg rect.bar').length`))
	if err != nil {
		t.Fatal(err)
	}
	if bars != 4 {
		t.Fatalf("the invocations chart of demo has %d bars, want one per process (4)", bars)
	}

	shot, err := chromedp.Run(page, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	checkScreenshot(t, shot)
	dir := os.Getenv("PRAAS_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dashboard.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshot (%d bytes): %s", len(shot), path)

	if p := problems(); len(p) > 0 {
		t.Fatalf("the page reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// openBrowser starts headless Chromium with a fresh profile and nothing
// that reaches out to the network, and returns its tab and a function
// listing the script errors and console errors (CSP violations among them)
// the page reported.
func openBrowser(t *testing.T, browser string) (context.Context, func() []string) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1400, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	page, cancelPage := chromedp.NewContext(allocCtx)
	page, cancelTimeout := context.WithTimeout(page, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelPage(); cancelAlloc() })

	var mu sync.Mutex
	var problems []string
	err := chromedp.Listen(page, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			p = "exception: " + ev.ExceptionDetails.Text
			if ex := ev.ExceptionDetails.Exception; ex != nil {
				p += " " + ex.Description
			}
		case *log.EventEntryAdded:
			// The first fetch, before the key is given, is answered 401.
			if ev.Entry.Level == log.EntryLevelError && !strings.Contains(ev.Entry.Text, "status of 401") {
				p = fmt.Sprintf("console %s: %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		}
		if p != "" {
			mu.Lock()
			problems = append(problems, p)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start chromium %s: %v", browser, err)
	}
	return page, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

// pageRow is one process row of the dashboard as it reads.
type pageRow struct {
	Status, Badge, Address, Generation, State, Mailbox, Invocations string
}

// pageRows reads the process rows of the page, by app/pid.
func pageRows(t *testing.T, page context.Context) map[string]pageRow {
	t.Helper()
	rows, err := chromedp.Run(page, chromedp.Evaluate[map[string]pageRow](`Object.fromEntries(
		[...document.querySelectorAll('article[data-app] tr[data-pid]')].map((tr) => {
			const td = tr.querySelectorAll('td');
			return [tr.closest('article').dataset.app + '/' + tr.dataset.pid, {
				Status: tr.dataset.status, Badge: td[1].textContent, Address: td[2].textContent,
				Generation: td[3].textContent, State: td[4].textContent, Mailbox: td[5].textContent,
				Invocations: td[7].textContent}];
		}))`))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	return rows
}

func waitForPage(t *testing.T, page context.Context, what string, cond func(map[string]pageRow) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows := pageRows(t, page)
		if cond(rows) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page does not show %s; it shows %+v", what, rows)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkScreenshot checks shot is a PNG of a plausible page: at least the
// window's size, tens of kilobytes, and not one flat colour.
func checkScreenshot(t *testing.T, shot []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot (%d bytes) is not a PNG: %v", len(shot), err)
	}
	b := img.Bounds()
	if b.Dx() < 1000 || b.Dy() < 600 || len(shot) < 20<<10 {
		t.Fatalf("screenshot of %dx%d, %d bytes: too small for the page", b.Dx(), b.Dy(), len(shot))
	}
	colours := make(map[[4]uint32]bool)
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bl, a := img.At(x, y).RGBA()
			colours[[4]uint32{r >> 8, g >> 8, bl >> 8, a >> 8}] = true
		}
	}
	if len(colours) < 16 {
		t.Fatalf("screenshot has %d colours: a blank page?", len(colours))
	}
}
