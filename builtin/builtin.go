// Package builtin is the demo image compiled into the praas binary: small
// functions that show state, messaging and triggers, used by `praas up` by
// default and by the tests.
package builtin

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/process"
)

// Name is the image name that selects this image.
const Name = "builtin"

// Image returns a new image with the demo functions.
func Image() *process.Image {
	im := process.NewImage()
	im.Register("echo", echo)
	im.Register("counter", counter)
	im.Register("state-set", stateSet)
	im.Register("state-get", stateGet)
	return im
}

// echo returns its input unchanged.
func echo(_ context.Context, _ *process.Process, in []byte) ([]byte, error) { return in, nil }

// counter adds 1 to the integer in state key "counter" and returns the new value.
func counter(_ context.Context, p *process.Process, _ []byte) ([]byte, error) {
	var failure error
	v := p.UpdateState("counter", func(old []byte, ok bool) []byte {
		n := int64(0)
		if ok {
			var err error
			if n, err = strconv.ParseInt(string(old), 10, 64); err != nil {
				failure = fmt.Errorf("%w: state key counter holds %q, not an integer", errs.ErrFailedPrecondition, old)
				return old
			}
		}
		return strconv.AppendInt(nil, n+1, 10)
	})
	if failure != nil {
		return nil, failure
	}
	return v, nil
}

// stateSet takes KEY=VALUE and stores VALUE under KEY.
func stateSet(_ context.Context, p *process.Process, in []byte) ([]byte, error) {
	key, value, ok := bytes.Cut(in, []byte("="))
	if !ok || len(key) == 0 {
		return nil, fmt.Errorf("%w: state-set expects KEY=VALUE", errs.ErrInvalidArgument)
	}
	p.SetState(string(key), bytes.Clone(value))
	return nil, nil
}

// stateGet takes KEY and returns its value.
func stateGet(_ context.Context, p *process.Process, in []byte) ([]byte, error) {
	v, ok := p.State(string(in))
	if !ok {
		return nil, fmt.Errorf("%w: state key %q is not set", errs.ErrNotFound, in)
	}
	return v, nil
}
