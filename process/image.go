package process

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/praas-dev/praas/internal/names"
)

// Handler is a function of a process image. Invocations run concurrently and
// share the process p. input belongs to the invocation (unless the function
// was registered with BorrowInput); the returned slice is not modified by
// praas. A handler that blocks outside praas operations should call
// Blocking first, so its connection goes on serving at once.
type Handler func(ctx context.Context, p *Process, input []byte) ([]byte, error)

// Function is a registered handler and its options.
type Function struct {
	Name    string
	Handler Handler
	// Trigger says which arriving messages invoke the function; see
	// OnMessage, MultiSource and Batch. Without one, messages only reach it
	// through Recv.
	Trigger Trigger
	// N is the message count of a MultiSource or Batch trigger.
	N int
	// BorrowsInput: the function keeps no reference to its input after it
	// returns, so the input's memory is reused (see BorrowInput).
	BorrowsInput bool

	// index numbers the function in its image: the runtime finds its
	// metrics by it (see metrics.go).
	index int
}

// BorrowInput declares that the function only borrows its input: it keeps
// neither the input nor any slice of it once it returns (it may return the
// input itself as its result). praas then reuses the memory of large inputs
// for later invocations, which makes large payloads markedly cheaper. A
// function that stores its input (SetState, Send to Self, or passes it to
// Invoke(Self, ...) of a function that does) must not use it.
func BorrowInput() Option { return func(f *Function) { f.BorrowsInput = true } }

// Trigger is a rule that turns arriving messages into invocations.
type Trigger int

// The triggers of the paper (Table 3). A message triggers function F when
// its key is "F" or "F:INVOCATION_KEY".
const (
	NoTrigger Trigger = iota
	// Standard: every message invokes the function with its data as input.
	Standard
	// MultiSourceTrigger: once N messages with the same invocation key have
	// arrived, the function runs once with all N, in arrival order.
	MultiSourceTrigger
	// BatchTrigger: once N messages of any invocation key have arrived, the
	// function runs once with all N, in arrival order.
	BatchTrigger
)

// Option configures a function at registration.
type Option func(*Function)

// OnMessage makes every message addressed to the function invoke it.
func OnMessage() Option { return func(f *Function) { f.Trigger = Standard } }

// MultiSource makes the function run once n messages with the same
// invocation key ("F:KEY") have arrived; it gets them all (see Triggered).
func MultiSource(n int) Option {
	return func(f *Function) { f.Trigger, f.N = MultiSourceTrigger, n }
}

// Batch makes the function run once n messages addressed to it, of any
// invocation key, have arrived; it gets them all (see Triggered).
func Batch(n int) Option { return func(f *Function) { f.Trigger, f.N = BatchTrigger, n } }

// Image is the set of functions a process runs. The zero value is not
// usable; create one with NewImage.
type Image struct {
	mu    sync.RWMutex
	funcs map[string]*Function
}

// NewImage returns an empty image.
func NewImage() *Image { return &Image{funcs: make(map[string]*Function)} }

// Register adds a function. It panics on an empty or duplicate name or a nil
// handler, since that is a programming error in the image.
func (im *Image) Register(name string, h Handler, opts ...Option) {
	if h == nil {
		panic(fmt.Sprintf("praas: function %q registered without a handler", name))
	}
	if err := names.Function(name); err != nil {
		panic("praas: " + err.Error())
	}
	f := &Function{Name: name, Handler: h}
	for _, o := range opts {
		o(f)
	}
	if (f.Trigger == MultiSourceTrigger || f.Trigger == BatchTrigger) && f.N < 1 {
		panic(fmt.Sprintf("praas: function %q: trigger needs a message count of at least 1", name))
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if _, dup := im.funcs[name]; dup {
		panic(fmt.Sprintf("praas: function %q registered twice", name))
	}
	f.index = len(im.funcs)
	im.funcs[name] = f
}

// Lookup returns the function named name.
func (im *Image) Lookup(name string) (*Function, bool) {
	im.mu.RLock()
	defer im.mu.RUnlock()
	f, ok := im.funcs[name]
	return f, ok
}

// Functions lists the registered names, sorted.
func (im *Image) Functions() []string {
	im.mu.RLock()
	defer im.mu.RUnlock()
	names := make([]string, 0, len(im.funcs))
	for n := range im.funcs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
