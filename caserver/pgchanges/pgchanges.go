// Package pgchanges tells devid-ca replicas on one PostgreSQL database when
// another one published a KRL, by PostgreSQL's LISTEN/NOTIFY: it is the
// revocation.Changes of a devid-ca whose store is PostgreSQL (db.type
// "postgresql"), in place of polling the database every second.
//
// At start, [Listener.Run] installs a trigger on devid's KRL state table
// (Table, revocation's "devid_krl": the KRL head and the KRL published)
// that calls pg_notify(Channel) after every statement that writes it, so
// every writer notifies, whichever process or tool it is; PostgreSQL
// delivers the notification when the writing transaction commits. The
// trigger and its function are created idempotently (CREATE OR REPLACE),
// under a transaction-scoped advisory lock, so replicas starting at once
// do not trip over each other. Run then LISTENs on a dedicated connection
// of its own (not one of the store's pool), opened from the same data
// source, and [Listener.Next] returns at each notification.
//
// When that connection drops (the server restarts, a pg_terminate_backend,
// a network failure; a connection that stops answering is found by a ping
// every KeepAlive), Run reconnects with a back-off (Backoff, doubling up to
// MaxBackoff), logging each attempt that fails, and meanwhile Next falls
// back to polling: it returns every Poll. After every connection, the first
// included, Next returns once more, as a notification may have been missed
// while no connection listened. Reconnects are counted for metrics
// (Config.Observer).
//
// The same connection listens for writes to the tables the KRL is built
// from (RevocationTables: devices, users, revoked serials), on
// RevocationsChannel: [Listener.NextRevocations] returns at each. A
// devid-ca that commits a change rebuilds the KRL itself; one killed
// between the commit and the rebuild leaves the change unpublished, and
// another replica, woken by NextRevocations, publishes it.
package pgchanges

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Table is the table whose writes are notified: devid's KRL state
// (revocation's "devid_krl").
const Table = "devid_krl"

// Channel is the notification channel of Table's writes.
const Channel = "devid_krl_changed"

// RevocationTables are the tables what the KRL revokes is built from:
// devices (their status), users (disabled or not) and revoked serials.
// Their writes are notified on RevocationsChannel.
var RevocationTables = []string{"devid_devices", "devid_users", "devid_revoked_serials"}

// RevocationsChannel is the notification channel of RevocationTables'
// writes.
const RevocationsChannel = "devid_revocations_changed"

// Defaults of Config.
const (
	DefaultPoll       = time.Second
	DefaultBackoff    = time.Second
	DefaultMaxBackoff = 30 * time.Second
	DefaultKeepAlive  = 30 * time.Second
)

// LockKey is the PostgreSQL advisory lock under which the trigger is
// installed, and devid-ca creates its tables at start: any number, the
// same in every devid-ca ("devidkrl" in ASCII).
const LockKey int64 = 0x646576696b726c

// ApplicationName is the listening connection's application_name, as
// pg_stat_activity shows it.
const ApplicationName = "devid-ca krl-notify"

// Config configures a Listener.
type Config struct {
	// DataSource is the PostgreSQL connection string (keyword/value or
	// URL): devid-ca's db.dataSource.
	DataSource string
	// Database, if not empty, is the database, in place of the one
	// DataSource names (devid-ca's db.database).
	Database string
	// Log receives the connection's losses and reconnects. Required.
	Log *slog.Logger
	// Poll is how often Next returns while no connection listens. Default
	// DefaultPoll.
	Poll time.Duration
	// Backoff is the wait before the first reconnect; each failure in a
	// row doubles it, up to MaxBackoff. Defaults DefaultBackoff and
	// DefaultMaxBackoff.
	Backoff, MaxBackoff time.Duration
	// KeepAlive is how long the listening connection may be silent before
	// it is pinged: a connection that does not answer is dropped and
	// reconnected. Default DefaultKeepAlive.
	KeepAlive time.Duration
	// Observer, if not nil, hears of the connection's state: for metrics.
	Observer Observer
}

// Observer hears of a Listener's connection.
type Observer interface {
	// Connected is called when the listening connection is up (true) or
	// lost (false).
	Connected(up bool)
	// Reconnected is called when a connection is made after one was lost
	// (or after the first attempts failed).
	Reconnected()
}

// Listener is a revocation.Changes from PostgreSQL notifications.
type Listener struct {
	cfg       Config
	conn      *pgx.ConnConfig
	wake      chan struct{} // buffered 1: a pending return of Next
	revWake   chan struct{} // buffered 1: a pending return of NextRevocations
	connected atomic.Bool
}

// New checks cfg and returns a Listener; nothing is connected until Run.
// Until Run listens, Next polls.
func New(cfg Config) (*Listener, error) {
	if cfg.Log == nil {
		return nil, errors.New("pgchanges: Log is required")
	}
	cc, err := pgx.ParseConfig(cfg.DataSource)
	if err != nil {
		return nil, fmt.Errorf("pgchanges: data source: %w", err)
	}
	if cfg.Database != "" {
		cc.Database = cfg.Database
	}
	cc.RuntimeParams["application_name"] = ApplicationName
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Poll, DefaultPoll)
	def(&cfg.Backoff, DefaultBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	def(&cfg.KeepAlive, DefaultKeepAlive)
	return &Listener{cfg: cfg, conn: cc, wake: make(chan struct{}, 1), revWake: make(chan struct{}, 1)}, nil
}

// Next returns when the stored KRL may have changed since Next last
// returned: at a notification, once after every connection, and every
// Poll while no connection listens; or with ctx's error once ctx is done.
func (l *Listener) Next(ctx context.Context) error {
	var tick <-chan time.Time
	if !l.connected.Load() {
		t := time.NewTimer(l.cfg.Poll)
		defer t.Stop()
		tick = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-l.wake:
		return nil
	case <-tick:
		return nil
	}
}

// NextRevocations returns when what the KRL is built from may have
// changed (a write to one of RevocationTables, by any devid-ca; a
// devid-ca that wrote rebuilds the KRL itself, unless it died first),
// and once after every connection; or with ctx's error once ctx is done.
// While no connection listens it does not return: the KRL's periodic
// rebuild is the fallback.
func (l *Listener) NextRevocations(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-l.revWake:
		return nil
	}
}

// Connected reports whether a connection listens now.
func (l *Listener) Connected() bool { return l.connected.Load() }

func (l *Listener) notify() { wake(l.wake) }

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default: // one is pending already
	}
}

// Run keeps a connection listening until ctx is done, reconnecting with a
// back-off whenever it fails; it returns ctx's error only.
func (l *Listener) Run(ctx context.Context) error {
	log := l.cfg.Log
	backoff, failures, lost := l.cfg.Backoff, 0, false
	for {
		conn, err := l.listen(ctx)
		if ctx.Err() != nil {
			if conn != nil {
				conn.Close(context.Background())
			}
			return ctx.Err()
		}
		if err != nil {
			failures++
			log.Error("KRL notifications: cannot listen; polling the database every "+l.cfg.Poll.String()+" meanwhile",
				"err", err, "failures", failures, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			backoff = min(2*backoff, l.cfg.MaxBackoff)
			continue
		}
		l.setConnected(true)
		if lost || failures > 0 {
			log.Info("KRL notifications: listening again", "failures", failures)
			if o := l.cfg.Observer; o != nil {
				o.Reconnected()
			}
		}
		backoff, failures = l.cfg.Backoff, 0
		l.notify() // a notification may have come while none listened
		wake(l.revWake)
		err = l.wait(ctx, conn)
		conn.Close(context.Background())
		l.setConnected(false)
		l.notify() // Next looks again, and polls from now on
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lost = true
		log.Warn("KRL notifications: connection lost; polling the database every "+l.cfg.Poll.String()+" until it is back", "err", err)
	}
}

func (l *Listener) setConnected(up bool) {
	l.connected.Store(up)
	if o := l.cfg.Observer; o != nil {
		o.Connected(up)
	}
}

// listen connects, installs the trigger and listens.
func (l *Listener) listen(ctx context.Context) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, l.conn)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := Install(cctx, conn); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()+"; LISTEN "+pgx.Identifier{RevocationsChannel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("listen: %w", err)
	}
	return conn, nil
}

// wait wakes Next at every notification on conn, pinging it when it has
// been silent for KeepAlive, until ctx is done or conn fails.
func (l *Listener) wait(ctx context.Context, conn *pgx.Conn) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, l.cfg.KeepAlive)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			switch {
			case n == nil:
			case n.Channel == Channel:
				l.notify()
			case n.Channel == RevocationsChannel:
				wake(l.revWake)
			}
			continue
		case !errors.Is(err, context.DeadlineExceeded) || conn.IsClosed():
			return err
		}
		// Silent for KeepAlive: is the connection still there?
		pctx, cancel := context.WithTimeout(ctx, l.cfg.KeepAlive)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
}

// Install creates Table and RevocationTables if missing (as step's nosql
// driver does) and the triggers that notify Channel and
// RevocationsChannel after every statement that writes them, in one
// transaction under an advisory lock: idempotent, and safe when several
// devid-ca start at once.
func Install(ctx context.Context, conn *pgx.Conn) error {
	stmts := []string{fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", LockKey)}
	add := func(table, channel string) {
		tbl := pgx.Identifier{table}.Sanitize()
		fn := pgx.Identifier{table + "_notify"}.Sanitize()
		stmts = append(stmts,
			// The table as smallstep/nosql's PostgreSQL driver creates it.
			fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (nkey BYTEA CHECK (octet_length(nkey) <= 255), nvalue BYTEA, PRIMARY KEY (nkey))", tbl),
			fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('%s', TG_TABLE_NAME); -- one per table and transaction: PostgreSQL folds duplicates
	RETURN NULL;
END
$$`, fn, channel),
			// Created once: dropping and creating it each time would lock
			// the table against its readers. (CREATE OR REPLACE TRIGGER
			// needs PostgreSQL 14.)
			fmt.Sprintf(`DO $$ BEGIN
	IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = '%s' AND tgrelid = '%s'::regclass) THEN
		CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s();
	END IF;
END $$`, table+"_notify", tbl, fn, tbl, fn))
	}
	add(Table, Channel)
	for _, t := range RevocationTables {
		add(t, RevocationsChannel)
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("install the notification triggers: %w", err)
			}
		}
		return nil
	})
}

// sleep waits d, or until ctx is done (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
