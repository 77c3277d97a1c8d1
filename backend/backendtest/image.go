package backendtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// Environment variables that steer the test image.
const (
	// EnvIgnoreSIGTERM=1 makes the image note SIGTERM but keep running,
	// so only a kill ends it.
	EnvIgnoreSIGTERM = "BACKENDTEST_IGNORE_SIGTERM"
	// EnvExit=N makes the image exit with status N once ready.
	EnvExit = "BACKENDTEST_EXIT"
)

// Lines the test image writes to its standard output.
const (
	lineEnv     = "backendtest env " // followed by its environment as a JSON array
	lineReady   = "backendtest ready\n"
	lineSIGTERM = "backendtest sigterm\n"
)

// maxLifetime ends test images that a crashed test run left behind.
const maxLifetime = 5 * time.Minute

// ImageMain is the test image: call it from main (or TestMain) when the
// process is to act as the image; it never returns. The image writes its
// environment, then a ready line, to standard output and runs until SIGTERM,
// on which it exits 0 at once (unless EnvIgnoreSIGTERM is set).
func ImageMain() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	env, err := json.Marshal(os.Environ())
	if err != nil {
		panic(err)
	}
	// Stdout may be a file: write whole lines, unbuffered, so that readers
	// polling the log see them as soon as they matter.
	fmt.Printf("%s%s\n", lineEnv, env)
	fmt.Print(lineReady)
	if s := os.Getenv(EnvExit); s != "" {
		code, err := strconv.Atoi(s)
		if err != nil {
			code = 125
		}
		os.Exit(code)
	}
	ignore := os.Getenv(EnvIgnoreSIGTERM) == "1"
	deadline := time.After(maxLifetime)
	for {
		select {
		case <-sig:
			fmt.Print(lineSIGTERM)
			if !ignore {
				os.Exit(0)
			}
		case <-deadline:
			os.Exit(2)
		}
	}
}
