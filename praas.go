// Package praas is the function SDK of praas, Process-as-a-Service: write
// functions against a cloud process (its state, its mailbox, other
// processes), register them, and serve.
//
//	func main() {
//		praas.Register("hello", func(ctx context.Context, p *praas.Process, in []byte) ([]byte, error) {
//			n, _ := p.State("visits")
//			if err := p.SetState("visits", append(n, '.')); err != nil {
//				return nil, err // the state is at its limit
//			}
//			return append([]byte("hello "), in...), nil
//		})
//		praas.Serve()
//	}
//
// A binary built this way is an image: give its path at app creation and
// the control plane starts it for every process of the app.
package praas

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/praas-dev/praas/process"
)

// Process is the handle a function uses to reach its process.
type Process = process.Process

// Handler is a function of an image.
type Handler = process.Handler

// Option configures a function at registration.
type Option = process.Option

// Image is a set of functions.
type Image = process.Image

// Message is a mailbox message.
type Message = process.Message

// Member is one process of the application; Membership all of them at an epoch.
type (
	Member     = process.Member
	Membership = process.Membership
)

// Trigger options for Register.
var (
	// OnMessage: every message with key "F" or "F:K" invokes function F.
	OnMessage = process.OnMessage
	// MultiSource(n): F runs once n messages with the same key "F:K" arrived.
	MultiSource = process.MultiSource
	// Batch(n): F runs once n messages addressed to it arrived, any K.
	Batch = process.Batch
	// BorrowInput: the function keeps no reference to its input after it
	// returns, so praas reuses the memory of large inputs.
	BorrowInput = process.BorrowInput
)

// Blocking tells praas that the calling function is about to block or work
// for long outside praas operations, so its connection keeps serving.
func Blocking(ctx context.Context) { process.Blocking(ctx) }

// Triggered returns, inside a function started by messages, the invocation
// key and the messages, in arrival order.
func Triggered(ctx context.Context) (key string, msgs []Message, ok bool) {
	return process.Triggered(ctx)
}

// Special process ids.
const (
	Self = process.Self // the calling process
	Any  = process.Any  // any source, in Recv
)

// DefaultImage holds the functions registered with Register.
var DefaultImage = process.NewImage()

// Register adds a function to DefaultImage.
func Register(name string, h Handler, opts ...Option) { DefaultImage.Register(name, h, opts...) }

// Serve runs DefaultImage as the process the control plane started, until
// it is told to stop (SIGTERM, SIGINT). It exits the program on error.
func Serve() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := ServeImage(ctx, DefaultImage); err != nil {
		fmt.Fprintln(os.Stderr, "praas:", err)
		os.Exit(1)
	}
}

// ServeImage runs im with the configuration the backend passed in the
// environment until ctx ends. The program's stdout and stderr become the
// process's log (see docs/observability.md).
func ServeImage(ctx context.Context, im *Image) error {
	cfg, err := process.ConfigFromEnv()
	if err != nil {
		return err
	}
	out := process.CaptureOutput(&cfg)
	rt, err := process.New(cfg, im)
	if err == nil {
		err = rt.Run(ctx)
	}
	out.Close(ctx, rt)
	return err
}
