package caserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/devid-ssh/devid/caserver/pgchanges"
	"github.com/devid-ssh/devid/internal/task"
	"github.com/devid-ssh/devid/revocation"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Replicas on PostgreSQL.
//
// Any number of devid-ca may serve one PostgreSQL database (db.type
// "postgresql", the same db.dataSource): they share every table, so a
// request may land on any of them. What each one keeps in memory is only a
// copy of what is in the database:
//
//   - the KRL: its version is allocated in the database by compare-and-swap
//     (revocation.Store.Rebuild); each replica serves the newest it has
//     seen, and learns of another's within a notification
//     (krl-notify: PostgreSQL LISTEN/NOTIFY, package pgchanges), or within
//     a second of polling while the notification connection is down;
//   - pending attestations (attestca) live in the database, so
//     /attestation/attest and /attestation/secret may land on different
//     replicas;
//   - the webhook secret between step-ca and devid's issuance policy is a
//     random one per process, used only inside it.
//
// The background tasks are safe on several replicas at once: KRL rebuilds
// allocate versions by compare-and-swap, the pruning of expired serials
// deletes only what no rebuild keeps, and a temporary quarantine's end is
// lifted by the one replica whose transaction deletes its record.
//
// At start, the tables (step-ca's and devid's) are created under an
// advisory lock (pgchanges.LockKey), one replica at a time: PostgreSQL's
// CREATE TABLE IF NOT EXISTS fails when two sessions create the same table
// at once, and the first KRL is stored while the lock is held.

// pgStartLock takes the advisory lock pgchanges.LockKey on a connection of
// its own, for a devid-ca about to open a PostgreSQL store, and returns
// what releases it. A database that does not exist yet is no error (step's
// driver creates it): there is nothing to lock, and unlock does nothing.
func pgStartLock(ctx context.Context, c DBConfig) (unlock func(), err error) {
	cc, err := pgx.ParseConfig(c.DataSource)
	if err != nil {
		return nil, fmt.Errorf("devid-ca: db.dataSource: %w", err)
	}
	if c.Database != "" {
		cc.Database = c.Database
	}
	cc.RuntimeParams["application_name"] = "devid-ca start"
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cc)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "3D000" { // invalid_catalog_name
		return func() {}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("devid-ca: PostgreSQL: %w", err)
	}
	// Another replica's start holds it for as long as it takes to open
	// the store: seconds.
	lctx, lcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer lcancel()
	if _, err := conn.Exec(lctx, "SELECT pg_advisory_lock($1)", pgchanges.LockKey); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("devid-ca: PostgreSQL: wait for other devid-ca starting on the database: %w", err)
	}
	return func() {
		// Closing the session releases its advisory locks.
		conn.Close(context.Background())
	}, nil
}

// krlChanges is the revocation.Changes of the store: PostgreSQL's
// notifications (s.notify), or revocation's default polling for bbolt
// (whose file no other process opens).
func (s *Server) krlChanges() (revocation.Changes, error) {
	if s.cfg.DB.Type != "postgresql" {
		return nil, nil
	}
	l, err := pgchanges.New(pgchanges.Config{
		DataSource: s.cfg.DB.DataSource, Database: s.cfg.DB.Database,
		Log: s.log.With("task", "krl-notify"), Observer: s.metrics.notify,
	})
	if err != nil {
		return nil, fmt.Errorf("devid-ca: %w", err)
	}
	s.notify = l
	return l, nil
}

// replicaTasks are the tasks of a devid-ca on PostgreSQL: krl-notify keeps
// the connection that listens for other replicas' KRLs; krl-catchup
// rebuilds the KRL after another replica's change, in case that replica
// died between its commit and its own rebuild.
func (s *Server) replicaTasks() []task.Task {
	if s.notify == nil {
		return nil
	}
	return []task.Task{
		task.Func("krl-notify", s.notify.Run),
		task.Func("krl-catchup", func(ctx context.Context) error {
			return catchUp(ctx, s.notify, s.revoke, s.log.With("task", "krl-catchup"), catchUpDelay)
		}),
	}
}

// catchUpDelay is how long krl-catchup waits after a change before it
// rebuilds: the replica that made the change publishes it within
// milliseconds, and the changes of a burst are covered by one rebuild.
const catchUpDelay = time.Second

// revocationChanges is what krl-catchup waits on (a *pgchanges.Listener).
type revocationChanges interface {
	NextRevocations(ctx context.Context) error
}

// catchUp rebuilds the KRL, delay (to twice that) after each change to what it is built
// from (by any replica, this one included), until ctx is done. The
// replica that commits a change rebuilds at once; should it die in
// between, its change would otherwise wait for a later change or the
// periodic rebuild (krlRebuildEvery). A rebuild that finds the revocations
// published already stores no new version (see revocation.Store.Rebuild);
// one that fails is logged, and the store is Behind, which the
// krl-rebuild task retries.
func catchUp(ctx context.Context, ch revocationChanges, r krlRebuilder, log *slog.Logger, delay time.Duration) error {
	for {
		if err := ch.NextRevocations(ctx); err != nil {
			return err
		}
		// Jittered, so that replicas woken together do not rebuild at the
		// same moment (their compare-and-swaps would make each other try
		// again).
		t := time.NewTimer(delay + rand.N(delay))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if err := r.Rebuild(); err != nil {
			log.Error("KRL rebuild after a change failed; the krl-rebuild task retries", "err", err)
		}
	}
}

// notifyMetrics are the metrics of the krl-notify task: the
// pgchanges.Observer of a devid-ca on PostgreSQL.
type notifyMetrics struct {
	connected  prometheus.Gauge
	reconnects prometheus.Counter
}

func newNotifyMetrics() *notifyMetrics {
	return &notifyMetrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "devid_ca_krl_notify_connected",
			Help: "1 while the connection that listens for other replicas' KRLs (PostgreSQL LISTEN/NOTIFY) is up, else 0 (the database is polled every second meanwhile). 0 on bbolt, which has no replicas.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devid_ca_krl_notify_reconnects_total",
			Help: "Times the connection that listens for other replicas' KRLs was made again after it was lost or could not be made.",
		}),
	}
}

func (n *notifyMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{n.connected, n.reconnects}
}

func (n *notifyMetrics) Connected(up bool) {
	if up {
		n.connected.Set(1)
	} else {
		n.connected.Set(0)
	}
}

func (n *notifyMetrics) Reconnected() { n.reconnects.Inc() }
