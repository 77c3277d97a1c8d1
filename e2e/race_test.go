//go:build race

package e2e

// raceEnabled: the test binary runs under the race detector, so the
// binaries it starts are built with it too.
const raceEnabled = true
