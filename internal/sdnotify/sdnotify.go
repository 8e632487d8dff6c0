// Package sdnotify tells systemd how a Type=notify service is doing:
// READY=1, RELOADING=1, STOPPING=1, STATUS=… and watchdog pings
// (sd_notify(3)), for devid's daemons (devid-hostd, devid-ca).
//
// Two mistakes it exists to avoid:
//
//   - NOTIFY_SOCKET is kept for every message. go-systemd's
//     SdNotify(true, …) unsets it, after which every later message
//     (RELOADING, STOPPING, watchdog pings) is silently dropped.
//   - A watchdog ping means "healthy": Watchdog pings only while the
//     daemon's own health check passes, so that systemd restarts a daemon
//     that runs but can no longer do its job.
//
// Outside systemd (no NOTIFY_SOCKET) every function does nothing.
package sdnotify

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// The states a daemon sends (sd_notify(3)).
const (
	Ready     = daemon.SdNotifyReady     // READY=1
	Reloading = daemon.SdNotifyReloading // RELOADING=1
	Stopping  = daemon.SdNotifyStopping  // STOPPING=1
	Ping      = daemon.SdNotifyWatchdog  // WATCHDOG=1
)

// Notify sends state (one or more NAME=VALUE lines) to systemd, keeping
// NOTIFY_SOCKET for later messages. A failure is logged, not returned: a
// daemon goes on whether or not systemd heard it.
func Notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("systemd notification failed", "state", state, "err", err)
	}
}

// WatchdogInterval is the service's watchdog timeout (WATCHDOG_USEC, for
// this process when WATCHDOG_PID is set), or 0 when systemd expects no
// pings.
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// Watchdog pings systemd's watchdog every half of WatchdogInterval until
// ctx is done: each time healthy (if not nil) returns nil within the other
// half. A failed or slow check sends no ping and is logged, so that
// systemd, after the watchdog timeout without one, kills and restarts the
// daemon. It returns at once when the watchdog is off.
func Watchdog(ctx context.Context, log *slog.Logger, healthy func(context.Context) error) {
	interval := WatchdogInterval()
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if healthy != nil {
			cctx, cancel := context.WithTimeout(ctx, interval/2)
			err := healthy(cctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Error("health check failed: no watchdog ping (systemd restarts the service once its watchdog timeout passes without one)", "err", err)
				continue
			}
		}
		Notify(log, Ping)
	}
}
