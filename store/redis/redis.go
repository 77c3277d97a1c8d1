// Package redis implements store.Metadata on Redis, for control planes that
// share their registry or outgrow one machine.
//
// Open it with a URL such as redis://host:6379/0?prefix=praas: (rediss:// for
// TLS; every option of go-redis's ParseURL is accepted too). All keys begin
// with the prefix, "praas:" by default, so several installations or tests can
// share one server:
//
//	P+"apps"                hash   name -> App JSON (Epoch, Revision not used)
//	P+"epochs"              hash   name -> epoch
//	P+"apprevs"             hash   name -> app revision
//	P+"procs:"+A            hash   pid  -> Process JSON (Revision not used)
//	P+"revs:"+A             hash   pid  -> process revision
//	P+"seqs:"+A             hash   pid  -> last backup seq
//	P+"backup:"+A+":"+I     zset   score seq, member "seq JSON"
//	P+"replicas"            hash   id   -> Replica JSON
//	P+"keys"                hash   id   -> Key JSON (admin and app keys)
//	P+"appkeys:"+A          set    ids of the keys of app A
//	P+"adminkeys"           set    ids of the admin keys (App "")
//	P+"usage:"+A            hash   "ms:I:f" -> counter f of I's bucket at ms
//	P+"usageidx:"+A         zset   score ms, member "ms:I": A's buckets by start
//	P+"usageapps"           set    apps with usage buckets, for PruneUsage
//
// where A and I are the app name and pid query-escaped (so they never contain
// ':'). Writes that check and modify several keys run as Lua scripts, which
// Redis executes atomically; DeleteApp, whose keys depend on data, is an
// optimistic WATCH/MULTI transaction. The key sets are indexes of P+"keys":
// a key's ID is in the set of its owner exactly when the hash holds it, so
// that ListKeys and DeleteApp need no scan. DeleteKey learns the set from
// the stored JSON and removes the key with a script that first checks the
// JSON is still the one it read.
//
// Revisions live in their own hashes, beside the JSON, so that the
// compare-and-set scripts of UpdateApp and UpdateProcess compare two decimal
// strings instead of decoding JSON, and so that BumpEpoch can bump the app's
// revision without rewriting its record. A record written before revisions
// existed has no revision field; it reads as revision 0 and can be updated
// as such.
//
// Usage buckets live apart from the records because they outlive the apps
// and processes they count; AddUsage increments their counters with
// HINCRBY in one MULTI, and a window is one ZRANGEBYSCORE and one HMGET.
//
// Durability is the server's: a write survives a restart of Redis only if the
// server persists it (appendonly yes, appendfsync always for every write).
package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// DefaultPrefix starts every key when the URL sets no prefix.
const DefaultPrefix = "praas:"

// maxTxRetries bounds the retries of an optimistic transaction that lost a race.
const maxTxRetries = 100

// Store is a store.Metadata on a Redis server.
type Store struct {
	rdb    *redis.Client
	prefix string
}

var _ store.Metadata = (*Store)(nil)

// Open connects to the server at rawURL (redis://[user:pass@]host:port/db,
// with an optional prefix query parameter) and checks that it answers.
func Open(ctx context.Context, rawURL string) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis: bad URL: %w", errs.ErrInvalidArgument)
	}
	q := u.Query()
	prefix := DefaultPrefix
	if q.Has("prefix") {
		prefix = q.Get("prefix")
		q.Del("prefix")
		u.RawQuery = q.Encode()
	}
	opts, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errs.ErrInvalidArgument)
	}
	rdb := redis.NewClient(opts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis: %s: %w", opts.Addr, err)
	}
	return &Store{rdb: rdb, prefix: prefix}, nil
}

// Close closes the connections to the server.
func (s *Store) Close() error { return s.rdb.Close() }

func (s *Store) appsKey() string     { return s.prefix + "apps" }
func (s *Store) epochsKey() string   { return s.prefix + "epochs" }
func (s *Store) appRevsKey() string  { return s.prefix + "apprevs" }
func (s *Store) replicasKey() string { return s.prefix + "replicas" }
func (s *Store) keysKey() string     { return s.prefix + "keys" }

// keyIndexKey returns the key of the set of app's key ids ("" for admin keys).
func (s *Store) keyIndexKey(app string) string {
	if app == "" {
		return s.prefix + "adminkeys"
	}
	return s.prefix + "appkeys:" + url.QueryEscape(app)
}
func (s *Store) procsKey(app string) string {
	return s.prefix + "procs:" + url.QueryEscape(app)
}
func (s *Store) revsKey(app string) string {
	return s.prefix + "revs:" + url.QueryEscape(app)
}
func (s *Store) seqsKey(app string) string {
	return s.prefix + "seqs:" + url.QueryEscape(app)
}
func (s *Store) backupKey(app, pid string) string {
	return s.prefix + "backup:" + url.QueryEscape(app) + ":" + url.QueryEscape(pid)
}

// backupSizesKey is a sorted set beside a backup queue: "seq:bytes" of
// each message, scored by seq, so a trim learns the bytes it removes
// without reading the messages.
func (s *Store) backupSizesKey(app, pid string) string {
	return s.prefix + "backupsizes:" + url.QueryEscape(app) + ":" + url.QueryEscape(pid)
}

// backupBytesKey is a hash: pid → bytes of the Data in its backup queue.
func (s *Store) backupBytesKey(app string) string {
	return s.prefix + "backupbytes:" + url.QueryEscape(app)
}

// The scripts return 1 on success and 0 or -1 for the failures they name.
var (
	// KEYS apps, epochs, apprevs; ARGV name, app JSON, epoch. 0: exists.
	createAppScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], 1)
return 1`)

	// KEYS apps, apprevs, epochs; ARGV name, expected revision, app JSON.
	// {-1}: no app; {0, stored revision}: stale; {1, new revision, epoch}.
	// A missing revision field is revision 0.
	updateAppScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {-1} end
local rev = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
if rev ~= ARGV[2] then return {0, rev} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local new = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return {1, new, redis.call('HGET', KEYS[3], ARGV[1]) or '0'}`)

	// KEYS apps, epochs, apprevs; ARGV name. -1: no app; else the new epoch.
	bumpEpochScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)`)

	// KEYS apps, procs, revs; ARGV app, pid, process JSON. -1: no app; 0: exists.
	createProcessScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[3], ARGV[2], 1)
return 1`)

	// KEYS procs, revs; ARGV pid, expected revision, process JSON.
	// {-1}: no process; {0, stored revision}: stale; {1, new revision}.
	// A missing revision field is revision 0.
	updateProcessScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {-1} end
local rev = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
if rev ~= ARGV[2] then return {0, rev} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {1, redis.call('HINCRBY', KEYS[2], ARGV[1], 1)}`)

	// KEYS procs, seqs, backup, revs, backup sizes, backup bytes; ARGV
	// pid. 0: no process.
	deleteProcessScript = redis.NewScript(`
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1`)

	// KEYS procs, seqs, backup, backup sizes, backup bytes; ARGV pid,
	// message JSON, bytes of its data. -1: no process; else the new seq.
	// The member starts with the seq to keep equal messages apart. The seq
	// counter lives beside the queue, so a trim never resets it.
	appendBackupScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local seq = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('ZADD', KEYS[3], seq, string.format('%d ', seq) .. ARGV[2])
redis.call('ZADD', KEYS[4], seq, string.format('%d:', seq) .. ARGV[3])
redis.call('HINCRBY', KEYS[5], ARGV[1], ARGV[3])
return seq`)

	// KEYS backup, backup sizes, backup bytes; ARGV pid, upTo.
	trimBackupScript = redis.NewScript(`
local n = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])) do
  n = n + tonumber(string.match(m, ':(%d+)$'))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if n > 0 and redis.call('HINCRBY', KEYS[3], ARGV[1], -n) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
end
return n`)

	// KEYS apps, keys, key index; ARGV app ("" for admin), id, key JSON.
	// -1: no app; 0: exists.
	createKeyScript = redis.NewScript(`
if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 0 then return 0 end
redis.call('SADD', KEYS[3], ARGV[2])
return 1`)

	// KEYS keys, key index; ARGV id, key JSON as read. 0: absent; -1: the
	// stored JSON changed (deleted and created again): read it again.
	deleteKeyScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
if v ~= ARGV[2] then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1`)

	// KEYS keys, key index. The JSON of the indexed keys, read atomically.
	listKeysScript = redis.NewScript(`
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local v = redis.call('HGET', KEYS[1], id)
  if v then out[#out + 1] = v end
end
return out`)
)

func (s *Store) CreateApp(ctx context.Context, app store.App) error {
	if app.Name == "" {
		return fmt.Errorf("redis: empty app name: %w", errs.ErrInvalidArgument)
	}
	epoch := app.Epoch
	data, err := encodeApp(app)
	if err != nil {
		return err
	}
	r, err := createAppScript.Run(ctx, s.rdb, []string{s.appsKey(), s.epochsKey(), s.appRevsKey()},
		app.Name, data, strconv.FormatUint(epoch, 10)).Int64()
	if err != nil {
		return fmt.Errorf("redis: create app %q: %w", app.Name, err)
	}
	if r == 0 {
		return fmt.Errorf("app %q: %w", app.Name, errs.ErrAlreadyExists)
	}
	return nil
}

func (s *Store) GetApp(ctx context.Context, name string) (store.App, error) {
	var app, epoch, rev *redis.StringCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		app = p.HGet(ctx, s.appsKey(), name)
		epoch = p.HGet(ctx, s.epochsKey(), name)
		rev = p.HGet(ctx, s.appRevsKey(), name)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) { // Nil: a field is absent
		return store.App{}, fmt.Errorf("redis: get app %q: %w", name, err)
	}
	if errors.Is(app.Err(), redis.Nil) {
		return store.App{}, fmt.Errorf("app %q: %w", name, errs.ErrNotFound)
	}
	return decodeApp(name, app.Val(), epoch.Val(), rev.Val())
}

func (s *Store) ListApps(ctx context.Context) ([]store.App, error) {
	var apps, epochs, revs *redis.MapStringStringCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		apps = p.HGetAll(ctx, s.appsKey())
		epochs = p.HGetAll(ctx, s.epochsKey())
		revs = p.HGetAll(ctx, s.appRevsKey())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redis: list apps: %w", err)
	}
	list := make([]store.App, 0, len(apps.Val()))
	for name, data := range apps.Val() {
		app, err := decodeApp(name, data, epochs.Val()[name], revs.Val()[name])
		if err != nil {
			return nil, err
		}
		list = append(list, app)
	}
	slices.SortFunc(list, func(a, b store.App) int { return strings.Compare(a.Name, b.Name) })
	return list, nil
}

// encodeApp returns app's JSON without the fields kept in their own hashes.
func encodeApp(app store.App) ([]byte, error) {
	app.Epoch, app.Revision = 0, 0
	return json.Marshal(app)
}

// decodeApp builds an app from its JSON, epoch and revision fields; an empty
// field (absent) is 0.
func decodeApp(name, data, epoch, rev string) (store.App, error) {
	var app store.App
	if err := json.Unmarshal([]byte(data), &app); err != nil {
		return app, fmt.Errorf("redis: decode app %q: %w", name, err)
	}
	var err error
	if app.Epoch, err = parseCounter(epoch); err != nil {
		return app, fmt.Errorf("redis: decode epoch of app %q: %w", name, err)
	}
	if app.Revision, err = parseCounter(rev); err != nil {
		return app, fmt.Errorf("redis: decode revision of app %q: %w", name, err)
	}
	return app, nil
}

// encodeProcess returns p's JSON without the revision, kept in its own hash.
func encodeProcess(p store.Process) ([]byte, error) {
	p.Revision = 0
	return json.Marshal(p)
}

// decodeProcess builds a process from its JSON and revision field.
func decodeProcess(app, pid, data, rev string) (store.Process, error) {
	var p store.Process
	if err := json.Unmarshal([]byte(data), &p); err != nil {
		return p, fmt.Errorf("redis: decode process %s/%s: %w", app, pid, err)
	}
	var err error
	if p.Revision, err = parseCounter(rev); err != nil {
		return p, fmt.Errorf("redis: decode revision of process %s/%s: %w", app, pid, err)
	}
	return p, nil
}

// parseCounter parses a counter field, "" (absent) being 0.
func parseCounter(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// casReply decodes the reply of a compare-and-set script: a status (-1
// absent, 0 stale, 1 written) and then counters as integers or decimal
// strings.
func casReply(cmd *redis.Cmd) (status int64, vals []uint64, err error) {
	reply, err := cmd.Slice()
	if err != nil {
		return 0, nil, err
	}
	if len(reply) == 0 {
		return 0, nil, errors.New("empty script reply")
	}
	status, ok := reply[0].(int64)
	if !ok {
		return 0, nil, fmt.Errorf("script reply status is %T", reply[0])
	}
	for _, v := range reply[1:] {
		switch v := v.(type) {
		case int64:
			vals = append(vals, uint64(v))
		case string:
			n, err := parseCounter(v)
			if err != nil {
				return 0, nil, fmt.Errorf("script reply: %w", err)
			}
			vals = append(vals, n)
		default:
			return 0, nil, fmt.Errorf("script reply value is %T", v)
		}
	}
	switch {
	case status == -1:
	case (status == 0 || status == 1) && len(vals) > 0:
	default:
		return 0, nil, fmt.Errorf("malformed script reply %v", reply)
	}
	return status, vals, nil
}

func (s *Store) DeleteApp(ctx context.Context, name string) error {
	procsKey, keyIndexKey := s.procsKey(name), s.keyIndexKey(name)
	// The keys of the backup queues depend on the app's pids, and the API
	// keys to delete are in the app's key index, so read both under WATCH
	// and delete everything in one MULTI; a concurrent change to the app,
	// its processes or its keys aborts the MULTI and we retry.
	txf := func(tx *redis.Tx) error {
		ok, err := tx.HExists(ctx, s.appsKey(), name).Result()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("app %q: %w", name, errs.ErrNotFound)
		}
		pids, err := tx.HKeys(ctx, procsKey).Result()
		if err != nil {
			return err
		}
		keyIDs, err := tx.SMembers(ctx, keyIndexKey).Result()
		if err != nil {
			return err
		}
		keys := []string{procsKey, s.seqsKey(name), s.revsKey(name), keyIndexKey, s.backupBytesKey(name)}
		for _, pid := range pids {
			keys = append(keys, s.backupKey(name, pid), s.backupSizesKey(name, pid))
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HDel(ctx, s.appsKey(), name)
			p.HDel(ctx, s.epochsKey(), name)
			p.HDel(ctx, s.appRevsKey(), name)
			if len(keyIDs) > 0 {
				p.HDel(ctx, s.keysKey(), keyIDs...)
			}
			p.Del(ctx, keys...)
			return nil
		})
		return err
	}
	for range maxTxRetries {
		err := s.rdb.Watch(ctx, txf, s.appsKey(), procsKey, keyIndexKey)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil && !errors.Is(err, errs.ErrNotFound) {
			return fmt.Errorf("redis: delete app %q: %w", name, err)
		}
		return err
	}
	return fmt.Errorf("redis: delete app %q: too much contention: %w", name, errs.ErrUnavailable)
}

func (s *Store) UpdateApp(ctx context.Context, app store.App) (store.App, error) {
	data, err := encodeApp(app)
	if err != nil {
		return store.App{}, err
	}
	keys := []string{s.appsKey(), s.appRevsKey(), s.epochsKey()}
	status, vals, err := casReply(updateAppScript.Run(ctx, s.rdb, keys,
		app.Name, strconv.FormatUint(app.Revision, 10), data))
	switch {
	case err != nil:
		return store.App{}, fmt.Errorf("redis: update app %q: %w", app.Name, err)
	case status < 0:
		return store.App{}, fmt.Errorf("app %q: %w", app.Name, errs.ErrNotFound)
	case status == 0:
		return store.App{}, fmt.Errorf("app %q: stale revision %d, stored is %d: %w",
			app.Name, app.Revision, vals[0], errs.ErrFailedPrecondition)
	case len(vals) != 2:
		return store.App{}, fmt.Errorf("redis: update app %q: malformed script reply", app.Name)
	}
	app.Revision, app.Epoch = vals[0], vals[1]
	return app, nil
}

func (s *Store) BumpEpoch(ctx context.Context, name string) (uint64, error) {
	keys := []string{s.appsKey(), s.epochsKey(), s.appRevsKey()}
	r, err := bumpEpochScript.Run(ctx, s.rdb, keys, name).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis: bump epoch of %q: %w", name, err)
	}
	if r < 0 {
		return 0, fmt.Errorf("app %q: %w", name, errs.ErrNotFound)
	}
	return uint64(r), nil
}

func (s *Store) CreateProcess(ctx context.Context, p store.Process) (store.Process, error) {
	if p.PID == "" {
		return store.Process{}, fmt.Errorf("redis: empty pid: %w", errs.ErrInvalidArgument)
	}
	data, err := encodeProcess(p)
	if err != nil {
		return store.Process{}, err
	}
	keys := []string{s.appsKey(), s.procsKey(p.App), s.revsKey(p.App)}
	r, err := createProcessScript.Run(ctx, s.rdb, keys, p.App, p.PID, data).Int64()
	switch {
	case err != nil:
		return store.Process{}, fmt.Errorf("redis: create process %s/%s: %w", p.App, p.PID, err)
	case r < 0:
		return store.Process{}, fmt.Errorf("app %q: %w", p.App, errs.ErrNotFound)
	case r == 0:
		return store.Process{}, fmt.Errorf("process %s/%s: %w", p.App, p.PID, errs.ErrAlreadyExists)
	}
	p.Revision = 1
	return p, nil
}

func (s *Store) UpdateProcess(ctx context.Context, p store.Process) (store.Process, error) {
	data, err := encodeProcess(p)
	if err != nil {
		return store.Process{}, err
	}
	keys := []string{s.procsKey(p.App), s.revsKey(p.App)}
	status, vals, err := casReply(updateProcessScript.Run(ctx, s.rdb, keys,
		p.PID, strconv.FormatUint(p.Revision, 10), data))
	switch {
	case err != nil:
		return store.Process{}, fmt.Errorf("redis: update process %s/%s: %w", p.App, p.PID, err)
	case status < 0:
		return store.Process{}, fmt.Errorf("process %s/%s: %w", p.App, p.PID, errs.ErrNotFound)
	case status == 0:
		return store.Process{}, fmt.Errorf("process %s/%s: stale revision %d, stored is %d: %w",
			p.App, p.PID, p.Revision, vals[0], errs.ErrFailedPrecondition)
	}
	p.Revision = vals[0]
	return p, nil
}

func (s *Store) GetProcess(ctx context.Context, app, pid string) (store.Process, error) {
	var data, rev *redis.StringCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		data = p.HGet(ctx, s.procsKey(app), pid)
		rev = p.HGet(ctx, s.revsKey(app), pid)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) { // Nil: a field is absent
		return store.Process{}, fmt.Errorf("redis: get process %s/%s: %w", app, pid, err)
	}
	if errors.Is(data.Err(), redis.Nil) {
		return store.Process{}, fmt.Errorf("process %s/%s: %w", app, pid, errs.ErrNotFound)
	}
	return decodeProcess(app, pid, data.Val(), rev.Val())
}

func (s *Store) ListProcesses(ctx context.Context, app string) ([]store.Process, error) {
	var exists *redis.BoolCmd
	var procs, revs *redis.MapStringStringCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		exists = p.HExists(ctx, s.appsKey(), app)
		procs = p.HGetAll(ctx, s.procsKey(app))
		revs = p.HGetAll(ctx, s.revsKey(app))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redis: list processes of %q: %w", app, err)
	}
	if !exists.Val() {
		return nil, fmt.Errorf("app %q: %w", app, errs.ErrNotFound)
	}
	list := make([]store.Process, 0, len(procs.Val()))
	for pid, data := range procs.Val() {
		p, err := decodeProcess(app, pid, data, revs.Val()[pid])
		if err != nil {
			return nil, err
		}
		list = append(list, p)
	}
	slices.SortFunc(list, func(a, b store.Process) int { return strings.Compare(a.PID, b.PID) })
	return list, nil
}

func (s *Store) DeleteProcess(ctx context.Context, app, pid string) error {
	keys := []string{s.procsKey(app), s.seqsKey(app), s.backupKey(app, pid), s.revsKey(app),
		s.backupSizesKey(app, pid), s.backupBytesKey(app)}
	r, err := deleteProcessScript.Run(ctx, s.rdb, keys, pid).Int64()
	if err != nil {
		return fmt.Errorf("redis: delete process %s/%s: %w", app, pid, err)
	}
	if r == 0 {
		return fmt.Errorf("process %s/%s: %w", app, pid, errs.ErrNotFound)
	}
	return nil
}

func (s *Store) AppendBackup(ctx context.Context, app, pid string, m store.Message) (uint64, error) {
	m.Seq = 0 // the member's prefix and the score carry it
	data, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	keys := []string{s.procsKey(app), s.seqsKey(app), s.backupKey(app, pid), s.backupSizesKey(app, pid), s.backupBytesKey(app)}
	r, err := appendBackupScript.Run(ctx, s.rdb, keys, pid, data, len(m.Data)).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis: append backup %s/%s: %w", app, pid, err)
	}
	if r < 0 {
		return 0, fmt.Errorf("process %s/%s: %w", app, pid, errs.ErrNotFound)
	}
	return uint64(r), nil
}

func (s *Store) ListBackup(ctx context.Context, app, pid string) ([]store.Message, error) {
	zs, err := s.rdb.ZRangeWithScores(ctx, s.backupKey(app, pid), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list backup %s/%s: %w", app, pid, err)
	}
	msgs := make([]store.Message, 0, len(zs))
	for _, z := range zs {
		member, _ := z.Member.(string)
		_, data, ok := strings.Cut(member, " ")
		var m store.Message
		if !ok {
			return nil, fmt.Errorf("redis: malformed backup entry in %s/%s", app, pid)
		}
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			return nil, fmt.Errorf("redis: decode backup %s/%s: %w", app, pid, err)
		}
		m.Seq = uint64(z.Score)
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func (s *Store) TrimBackup(ctx context.Context, app, pid string, upTo uint64) error {
	keys := []string{s.backupKey(app, pid), s.backupSizesKey(app, pid), s.backupBytesKey(app)}
	err := trimBackupScript.Run(ctx, s.rdb, keys, pid, strconv.FormatUint(upTo, 10)).Err()
	if err != nil {
		return fmt.Errorf("redis: trim backup %s/%s: %w", app, pid, err)
	}
	return nil
}

func (s *Store) BackupStats(ctx context.Context, app, pid string) (store.QueueStats, error) {
	var n *redis.IntCmd
	var b *redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		n = p.ZCard(ctx, s.backupKey(app, pid))
		b = p.HGet(ctx, s.backupBytesKey(app), pid)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return store.QueueStats{}, fmt.Errorf("redis: backup stats %s/%s: %w", app, pid, err)
	}
	bytes, _ := b.Int64() // absent: 0
	return store.QueueStats{Messages: int(n.Val()), Bytes: bytes}, nil
}

func (s *Store) PutReplica(ctx context.Context, r store.Replica) error {
	if r.ID == "" {
		return fmt.Errorf("redis: empty replica id: %w", errs.ErrInvalidArgument)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := s.rdb.HSet(ctx, s.replicasKey(), r.ID, data).Err(); err != nil {
		return fmt.Errorf("redis: put replica %q: %w", r.ID, err)
	}
	return nil
}

func (s *Store) ListReplicas(ctx context.Context) ([]store.Replica, error) {
	all, err := s.rdb.HGetAll(ctx, s.replicasKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list replicas: %w", err)
	}
	list := make([]store.Replica, 0, len(all))
	for id, data := range all {
		var r store.Replica
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return nil, fmt.Errorf("redis: decode replica %q: %w", id, err)
		}
		list = append(list, r)
	}
	slices.SortFunc(list, func(a, b store.Replica) int { return strings.Compare(a.ID, b.ID) })
	return list, nil
}

func (s *Store) DeleteReplica(ctx context.Context, id string) error {
	if err := s.rdb.HDel(ctx, s.replicasKey(), id).Err(); err != nil {
		return fmt.Errorf("redis: delete replica %q: %w", id, err)
	}
	return nil
}

func (s *Store) CreateKey(ctx context.Context, k store.Key) error {
	if k.ID == "" {
		return fmt.Errorf("redis: empty key id: %w", errs.ErrInvalidArgument)
	}
	data, err := json.Marshal(k)
	if err != nil {
		return err
	}
	keys := []string{s.appsKey(), s.keysKey(), s.keyIndexKey(k.App)}
	r, err := createKeyScript.Run(ctx, s.rdb, keys, k.App, k.ID, data).Int64()
	switch {
	case err != nil:
		return fmt.Errorf("redis: create key %q: %w", k.ID, err)
	case r < 0:
		return fmt.Errorf("app %q: %w", k.App, errs.ErrNotFound)
	case r == 0:
		return fmt.Errorf("key %q: %w", k.ID, errs.ErrAlreadyExists)
	}
	return nil
}

func (s *Store) GetKey(ctx context.Context, id string) (store.Key, error) {
	k, _, err := s.getKey(ctx, id)
	return k, err
}

// getKey returns the key with its stored JSON.
func (s *Store) getKey(ctx context.Context, id string) (store.Key, string, error) {
	data, err := s.rdb.HGet(ctx, s.keysKey(), id).Result()
	if errors.Is(err, redis.Nil) {
		return store.Key{}, "", fmt.Errorf("key %q: %w", id, errs.ErrNotFound)
	}
	if err != nil {
		return store.Key{}, "", fmt.Errorf("redis: get key %q: %w", id, err)
	}
	var k store.Key
	if err := json.Unmarshal([]byte(data), &k); err != nil {
		return store.Key{}, "", fmt.Errorf("redis: decode key %q: %w", id, err)
	}
	return k, data, nil
}

func (s *Store) ListKeys(ctx context.Context, app string) ([]store.Key, error) {
	vals, err := listKeysScript.Run(ctx, s.rdb, []string{s.keysKey(), s.keyIndexKey(app)}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redis: list keys of %q: %w", app, err)
	}
	list := make([]store.Key, 0, len(vals))
	for _, data := range vals {
		var k store.Key
		if err := json.Unmarshal([]byte(data), &k); err != nil {
			return nil, fmt.Errorf("redis: decode key of %q: %w", app, err)
		}
		list = append(list, k)
	}
	slices.SortFunc(list, func(a, b store.Key) int { return strings.Compare(a.ID, b.ID) })
	return list, nil
}

func (s *Store) DeleteKey(ctx context.Context, id string) error {
	for range maxTxRetries {
		k, data, err := s.getKey(ctx, id)
		if err != nil {
			return err
		}
		keys := []string{s.keysKey(), s.keyIndexKey(k.App)}
		r, err := deleteKeyScript.Run(ctx, s.rdb, keys, id, data).Int64()
		switch {
		case err != nil:
			return fmt.Errorf("redis: delete key %q: %w", id, err)
		case r == 0:
			return fmt.Errorf("key %q: %w", id, errs.ErrNotFound)
		case r > 0:
			return nil
		}
		// Replaced since we read it: read it again.
	}
	return fmt.Errorf("redis: delete key %q: too much contention: %w", id, errs.ErrUnavailable)
}

func (s *Store) usageKey(app string) string    { return s.prefix + "usage:" + url.QueryEscape(app) }
func (s *Store) usageIdxKey(app string) string { return s.prefix + "usageidx:" + url.QueryEscape(app) }
func (s *Store) usageAppsKey() string          { return s.prefix + "usageapps" }

// usageFields name a bucket's counters in the usage hash, in the order of
// usageCounters.
var usageFields = [...]string{"i", "b", "in", "out", "st", "sw"}

func usageCounters(u *store.Usage) [len(usageFields)]*uint64 {
	return [...]*uint64{&u.Invocations, &u.BusyNanos, &u.BytesIn, &u.BytesOut, &u.StateByteSeconds, &u.SwapByteSeconds}
}

// pruneUsageScript deletes an app's buckets that start before a time.
// KEYS usage, usageidx, usageapps; ARGV before (ms, exclusive), app name.
var pruneUsageScript = redis.NewScript(`
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, m in ipairs(old) do
  for _, f in ipairs({'i', 'b', 'in', 'out', 'st', 'sw'}) do
    redis.call('HDEL', KEYS[1], m .. ':' .. f)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[3], ARGV[2])
end
return #old`)

func (s *Store) AddUsage(ctx context.Context, app, pid string, start time.Time, delta store.Usage) error {
	ms := start.UnixMilli()
	member := strconv.FormatInt(ms, 10) + ":" + url.QueryEscape(pid)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, s.usageAppsKey(), app)
		p.ZAdd(ctx, s.usageIdxKey(app), redis.Z{Score: float64(ms), Member: member})
		for i, c := range usageCounters(&delta) {
			if *c != 0 {
				p.HIncrBy(ctx, s.usageKey(app), member+":"+usageFields[i], int64(*c))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: add usage %s/%s: %w", app, pid, err)
	}
	return nil
}

func (s *Store) ListUsage(ctx context.Context, app, pid string, since, until time.Time) ([]store.UsageBucket, error) {
	members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.usageIdxKey(app), ByScore: true,
		Start: strconv.FormatInt(since.UnixMilli(), 10), Stop: "(" + strconv.FormatInt(until.UnixMilli(), 10)}).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list usage %s: %w", app, err)
	}
	out := []store.UsageBucket{}
	var fields []string
	for _, m := range members {
		msText, escaped, _ := strings.Cut(m, ":")
		ms, err := strconv.ParseInt(msText, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redis: malformed usage bucket %q of %s", m, app)
		}
		bpid, err := url.QueryUnescape(escaped)
		if err != nil {
			return nil, fmt.Errorf("redis: malformed usage bucket %q of %s", m, app)
		}
		start := time.UnixMilli(ms).UTC()
		if (pid != "" && bpid != pid) || start.Before(since) || !start.Before(until) {
			continue
		}
		out = append(out, store.UsageBucket{PID: bpid, Start: start})
		for _, f := range usageFields {
			fields = append(fields, m+":"+f)
		}
	}
	if len(out) == 0 {
		return out, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.usageKey(app), fields...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list usage %s: %w", app, err)
	}
	for i := range out {
		for j, c := range usageCounters(&out[i].Usage) {
			if v, ok := vals[i*len(usageFields)+j].(string); ok {
				if *c, err = strconv.ParseUint(v, 10, 64); err != nil {
					return nil, fmt.Errorf("redis: malformed usage counter of %s: %w", app, err)
				}
			}
		}
	}
	store.SortUsage(out)
	return out, nil
}

func (s *Store) PruneUsage(ctx context.Context, before time.Time) error {
	apps, err := s.rdb.SMembers(ctx, s.usageAppsKey()).Result()
	if err != nil {
		return fmt.Errorf("redis: prune usage: %w", err)
	}
	ms := strconv.FormatInt(before.UnixMilli(), 10)
	for _, app := range apps {
		keys := []string{s.usageKey(app), s.usageIdxKey(app), s.usageAppsKey()}
		if err := pruneUsageScript.Run(ctx, s.rdb, keys, ms, app).Err(); err != nil {
			return fmt.Errorf("redis: prune usage of %s: %w", app, err)
		}
	}
	return nil
}
