//go:build !linux

package proclog

import (
	"errors"
	"time"
)

// Capture is available on Linux only.
type Capture struct{ Ring *Ring }

// StartCapture fails: output capture needs Linux.
func StartCapture(ring *Ring) (*Capture, error) {
	return nil, errors.New("capture: output capture needs Linux")
}

// Close does nothing.
func (c *Capture) Close(wait time.Duration) {}
