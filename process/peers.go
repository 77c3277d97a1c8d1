package process

import (
	"context"
	"fmt"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/wire"
)

func (rt *Runtime) remoteInvoke(ctx context.Context, dest, function string, input []byte) ([]byte, error) {
	return nil, fmt.Errorf("%w: remote invoke of %s is not available", errs.ErrFailedPrecondition, dest)
}

func (rt *Runtime) acceptMessage(ctx context.Context, source string, m wire.Message, data []byte) error {
	return fmt.Errorf("%w: mailboxes are not available", errs.ErrFailedPrecondition)
}
