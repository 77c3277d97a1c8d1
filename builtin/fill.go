package builtin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/process"
)

// maxFill bounds state-fill, so a typo cannot exhaust the machine.
const maxFill = 4 << 30

// stateFill takes "KEY SIZE SEED" and stores SIZE pseudo-random bytes,
// generated from SEED, under KEY; it returns their digest (as state-digest). Tests
// and benchmarks use it to give a process a large state.
func stateFill(_ context.Context, p *process.Process, in []byte) ([]byte, error) {
	f := strings.Fields(string(in))
	if len(f) != 3 {
		return nil, fmt.Errorf("%w: state-fill expects KEY SIZE SEED", errs.ErrInvalidArgument)
	}
	size, err1 := strconv.ParseInt(f[1], 10, 64)
	seed, err2 := strconv.ParseUint(f[2], 10, 64)
	if err1 != nil || err2 != nil || size < 0 || size > maxFill {
		return nil, fmt.Errorf("%w: state-fill: SIZE must be 0 to %d and SEED a number", errs.ErrInvalidArgument, int64(maxFill))
	}
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	_, _ = r.Read(data)
	if err := p.SetState(f[0], data); err != nil {
		return nil, err
	}
	return digest(data), nil
}

// stateDigest takes KEY and returns the SHA-256 of its value in hex and its
// length: "HEX LEN".
func stateDigest(_ context.Context, p *process.Process, in []byte) ([]byte, error) {
	v, ok := p.State(string(in))
	if !ok {
		return nil, fmt.Errorf("%w: state key %q is not set", errs.ErrNotFound, in)
	}
	return digest(v), nil
}

// digest is "SHA256HEX LEN".
func digest(v []byte) []byte {
	sum := sha256.Sum256(v)
	return []byte(hex.EncodeToString(sum[:]) + " " + strconv.Itoa(len(v)))
}
