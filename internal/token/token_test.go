package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/praas-dev/praas/errs"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	s := NewSigner(newKey(t))
	v := NewVerifier(s.Public())
	long := strings.Repeat("x", 63)
	tests := []Claims{
		{App: "app", PID: "p1", Ops: OpInvoke | OpSend, Expires: t0.Add(time.Hour)},
		{App: "app", PID: AnyPID, Sub: "p2", Gen: 7, Ops: OpInvoke | OpSend | OpInternal, Expires: t0.Add(time.Minute)},
		{App: "app", PID: "p1", Ops: OpReplica, Expires: t0.Add(time.Millisecond)},
		{App: long, PID: long, Sub: long, Gen: 1<<64 - 1, Ops: 0xff, Expires: t0.Add(24 * time.Hour)},
		{Expires: t0.Add(time.Second)},
	}
	for _, c := range tests {
		tok := s.Sign(c)
		got, err := v.Verify(tok, t0)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if diff := cmp.Diff(c, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
			t.Errorf("claims differ (-signed +verified):\n%s", diff)
		}
	}
}

func TestSize(t *testing.T) {
	s := NewSigner(newKey(t))
	long := strings.Repeat("n", 63)
	tok := s.Sign(Claims{App: long, PID: long, Sub: long, Gen: 1 << 40, Ops: OpInvoke | OpSend | OpInternal, Expires: t0})
	if len(tok) >= 512 {
		t.Fatalf("token with 63-byte names is %d bytes, want < 512", len(tok))
	}
	longest := strings.Repeat("n", MaxName)
	if n := len(s.Sign(Claims{App: longest, PID: longest, Sub: longest, Expires: t0})); n > MaxLen {
		t.Fatalf("longest token is %d bytes, MaxLen %d", n, MaxLen)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Sign took a name over MaxName")
		}
	}()
	s.Sign(Claims{App: longest + "x"})
}

func TestRefused(t *testing.T) {
	key := newKey(t)
	s := NewSigner(key)
	v := NewVerifier(s.Public())
	c := Claims{App: "app", PID: "p1", Sub: "p2", Gen: 3, Ops: OpInvoke | OpSend, Expires: t0.Add(time.Hour)}
	good := s.Sign(c)
	raw, _ := base64.RawURLEncoding.DecodeString(good)
	reencode := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 1
		return reencode(b)
	}

	tests := []struct {
		name, tok string
		now       time.Time
		expired   bool
	}{
		{name: "empty", tok: ""},
		{name: "garbage", tok: "not a token!"},
		{name: "padded", tok: good + "=="},
		{name: "truncated", tok: good[:len(good)-4]},
		{name: "too long", tok: strings.Repeat("A", MaxLen+1)},
		{name: "wrong key", tok: NewSigner(newKey(t)).Sign(c)},
		{name: "ops widened", tok: flip(1)},
		{name: "expiry moved", tok: flip(9)},
		{name: "generation changed", tok: flip(17)},
		{name: "pid changed", tok: flip(fixedLen + 1 + len(c.App) + 1)},
		{name: "signature changed", tok: flip(len(raw) - 1)},
		{name: "version changed", tok: flip(0)},
		{name: "trailing byte", tok: reencode(append(append([]byte(nil), raw...), 0))},
		{name: "expired", tok: good, now: c.Expires, expired: true},
		{name: "long expired", tok: good, now: c.Expires.Add(time.Hour), expired: true},
		{name: "zero expiry", tok: s.Sign(Claims{App: "app"}), expired: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = t0
			}
			_, err := v.Verify(tc.tok, now)
			if !errors.Is(err, errs.ErrUnauthenticated) {
				t.Fatalf("Verify: %v, want unauthenticated", err)
			}
			if errors.Is(err, ErrExpired) != tc.expired {
				t.Fatalf("Verify: %v; expired: %v", err, tc.expired)
			}
			if tc.expired && !strings.Contains(err.Error(), "expired at") {
				t.Fatalf("expiry error %q does not say when", err)
			}
		})
	}
	// Every single-bit change anywhere is refused.
	for i := range raw {
		for bit := range 8 {
			b := append([]byte(nil), raw...)
			b[i] ^= 1 << bit
			if _, err := v.Verify(reencode(b), t0); err == nil {
				t.Fatalf("token with byte %d bit %d flipped verified", i, bit)
			}
		}
	}
}

func TestRotation(t *testing.T) {
	old, cur := NewSigner(newKey(t)), NewSigner(newKey(t))
	v, err := DecodeVerifier(EncodePublic(cur.Public()) + ", " + EncodePublic(old.Public()))
	if err != nil {
		t.Fatal(err)
	}
	c := Claims{App: "a", PID: "p", Expires: t0.Add(time.Minute)}
	for _, s := range []*Signer{old, cur} {
		if _, err := v.Verify(s.Sign(c), t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := DecodeVerifier(" , "); err == nil {
		t.Fatal("a verifier without keys")
	}
}

func TestScopes(t *testing.T) {
	one := Claims{App: "app", PID: "p1"}
	any := Claims{App: "app", PID: AnyPID}
	tests := []struct {
		c        Claims
		app, pid string
		want     bool
	}{
		{one, "app", "p1", true},
		{one, "app", "p2", false},
		{one, "other", "p1", false},
		{any, "app", "p1", true},
		{any, "app", "zz", true},
		{any, "other", "p1", false},
		{Claims{App: "app", PID: ""}, "app", "p1", false},
	}
	for _, tc := range tests {
		if got := tc.c.Covers(tc.app, tc.pid); got != tc.want {
			t.Errorf("%+v covers %s/%s: %v, want %v", tc.c, tc.app, tc.pid, got, tc.want)
		}
	}
	ops := OpInvoke | OpSend
	if !ops.Has(OpInvoke) || !ops.Has(OpInvoke|OpSend) || ops.Has(OpRelay) || ops.Has(OpSend|OpInternal) {
		t.Fatalf("Has on %s", ops)
	}
	if got := (OpInvoke | OpRelay | OpReplica).String(); got != "invoke|relay|replica" {
		t.Fatalf("String: %q", got)
	}
	if got := Ops(0).String(); got != "none" {
		t.Fatalf("String of no ops: %q", got)
	}
}

func TestPublicKeyEncoding(t *testing.T) {
	pub := NewSigner(newKey(t)).Public()
	for _, s := range []string{EncodePublic(pub), base64.StdEncoding.EncodeToString(pub), " " + EncodePublic(pub) + "\n"} {
		got, err := DecodePublic(s)
		if err != nil || !got.Equal(pub) {
			t.Fatalf("DecodePublic(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "!!", base64.RawURLEncoding.EncodeToString(pub[:31])} {
		if _, err := DecodePublic(s); err == nil {
			t.Fatalf("DecodePublic(%q) succeeded", s)
		}
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "signing.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("second load: %v; same key: %v", err, k1.Equal(k2))
	}
	if b, _ := os.ReadFile(path); !strings.HasPrefix(string(b), "-----BEGIN PRIVATE KEY-----") {
		t.Fatalf("key file is not PEM: %q", b)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}

	// Raw files: a seed or a whole key.
	seedPath, keyPath := filepath.Join(dir, "seed"), filepath.Join(dir, "raw")
	if err := os.WriteFile(seedPath, k1.Seed(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, k1, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{seedPath, keyPath} {
		if k, err := LoadOrCreateKey(p); err != nil || !k.Equal(k1) {
			t.Fatalf("%s: %v", p, err)
		}
	}
	bad := filepath.Join(dir, "bad")
	for _, data := range [][]byte{[]byte("short"), append(append([]byte(nil), k1[:32]...), make([]byte, 32)...),
		[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")} {
		if err := os.WriteFile(bad, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateKey(bad); err == nil {
			t.Fatalf("loaded a key from %q", data)
		}
	}
}

// Replicas starting at once over a shared directory end up with one key.
func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	keys := make([]ed25519.PrivateKey, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !k.Equal(keys[0]) {
			t.Fatal("concurrent creators got different keys")
		}
	}
}

// FuzzVerify: Verify never panics, accepts nothing that was not signed, and
// what it accepts is what was signed.
func FuzzVerify(f *testing.F) {
	s := NewSigner(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	v := NewVerifier(s.Public())
	signed := map[string]Claims{}
	for _, c := range []Claims{
		{App: "app", PID: "p1", Ops: OpInvoke | OpSend, Expires: t0.Add(time.Hour)},
		{App: "app", PID: AnyPID, Sub: "p2", Gen: 9, Ops: OpInternal, Expires: t0.Add(time.Hour)},
	} {
		tok := s.Sign(c)
		signed[tok] = c
		f.Add(tok)
		f.Add(tok[:len(tok)/2])
	}
	f.Add("")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok, t0)
		if err != nil {
			if !errors.Is(err, errs.ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
			}
			return
		}
		want, ok := signed[tok]
		if !ok {
			t.Fatalf("unsigned token %q verified as %+v", tok, c)
		}
		if c.App != want.App || c.PID != want.PID || c.Sub != want.Sub || c.Gen != want.Gen || c.Ops != want.Ops || !c.Expires.Equal(want.Expires) {
			t.Fatalf("verified %+v, signed %+v", c, want)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	s := NewSigner(newKey(b))
	v := NewVerifier(s.Public())
	tok := s.Sign(Claims{App: "app", PID: AnyPID, Sub: "p-1234abcd", Gen: 3, Ops: OpInvoke | OpSend | OpInternal, Expires: t0.Add(time.Hour)})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	s := NewSigner(newKey(b))
	c := Claims{App: "app", PID: "p1", Ops: OpInvoke | OpSend, Expires: t0.Add(time.Hour)}
	b.ReportAllocs()
	for b.Loop() {
		s.Sign(c)
	}
}
