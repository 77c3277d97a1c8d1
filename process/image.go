package process

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Handler is a function of a process image. Invocations run concurrently, each
// in its own goroutine, and share the process p. input belongs to the
// invocation; the returned slice is not modified by praas.
type Handler func(ctx context.Context, p *Process, input []byte) ([]byte, error)

// Function is a registered handler and its options.
type Function struct {
	Name    string
	Handler Handler
}

// Option configures a function at registration.
type Option func(*Function)

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
	if name == "" || len(name) > 255 || h == nil {
		panic(fmt.Sprintf("praas: invalid registration of function %q", name))
	}
	f := &Function{Name: name, Handler: h}
	for _, o := range opts {
		o(f)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if _, dup := im.funcs[name]; dup {
		panic(fmt.Sprintf("praas: function %q registered twice", name))
	}
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
