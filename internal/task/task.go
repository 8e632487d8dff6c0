// Package task runs a daemon's background jobs: each job is a [Task] with a
// name and a Run(ctx) method, and a [Runner] runs a list of them until its
// context ends.
//
// What the Runner does with what a task's Run returns:
//
//   - nil, before ctx is done: the task is finished and is not run again;
//     the other tasks go on.
//   - an error, or a panic (recovered, logged with its stack), before ctx
//     is done: the task is logged as failed and run again after a backoff.
//     The first restart waits MinBackoff, each further failure in a row
//     doubles the wait, up to MaxBackoff. A run that lasted MaxBackoff or
//     longer starts the count again.
//   - an error made with [Fatal]: the task is not run again, every other
//     task's context is cancelled, and Run returns that error once they
//     have all returned.
//   - anything, once ctx is done: the task is stopped. An error other than
//     ctx's own (ctx.Err(), possibly wrapped) is logged and returned by Run:
//     a task that could not stop cleanly — a shutdown that timed out on
//     its own deadline included.
//
// Run returns only once every task's Run has returned, so a daemon whose
// context ends stops cleanly: nothing is left running.
//
// Each record the Runner logs carries the attribute task=NAME. A task logs
// through a logger given to it when it is made, by convention
// log.With("task", name), so that its own records carry the same attribute.
//
// Time is the standard library's: tests drive it with testing/synctest.
package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// A Task is one background job of a daemon.
type Task interface {
	// Name names the task in logs: short, lower case, unique in a Runner.
	Name() string
	// Run does the job until ctx is done or it fails. It returns nil when
	// the job is finished, an error when it failed and should be run again
	// (after a backoff), or an error made with Fatal when the daemon cannot
	// go on without it.
	Run(ctx context.Context) error
}

// Func is a Task made of a name and a function.
func Func(name string, run func(ctx context.Context) error) Task {
	return funcTask{name, run}
}

type funcTask struct {
	name string
	run  func(context.Context) error
}

func (f funcTask) Name() string                  { return f.name }
func (f funcTask) Run(ctx context.Context) error { return f.run(ctx) }

// Fatal marks err as a failure the daemon cannot go on after: the Runner
// stops every task and returns err. Fatal(nil) is nil.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return &fatalError{err}
}

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// Default backoff between the restarts of a failed task.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
)

// A Runner runs tasks. The zero value is not usable: Log is required.
type Runner struct {
	Log *slog.Logger // required
	// MinBackoff is the wait before the first restart of a failed task
	// (DefaultMinBackoff if zero); each further failure in a row doubles
	// it, up to MaxBackoff (DefaultMaxBackoff if zero, at least
	// MinBackoff).
	MinBackoff, MaxBackoff time.Duration
}

// Run runs every task, each in its own goroutine, until ctx is done or one
// fails fatally (see the package doc), and returns once all have returned:
// nil after a clean stop, else the fatal error joined with the errors of
// tasks that did not stop cleanly.
func (r *Runner) Run(ctx context.Context, tasks ...Task) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, t := range tasks {
		wg.Go(func() { errs[i] = r.supervise(ctx, stop, t) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// supervise runs t, again after each failure, until it finishes, fails
// fatally, or ctx is done.
func (r *Runner) supervise(ctx context.Context, stop context.CancelFunc, t Task) error {
	log := r.Log.With("task", t.Name())
	minB, maxB := r.backoffs()
	failures := 0
	for {
		start := time.Now()
		err := runOnce(ctx, t)
		var p *panicError
		isPanic := errors.As(err, &p)
		if ctx.Err() != nil {
			// Clean: nothing, or the Runner's context's own error — not
			// another context's (a shutdown that timed out).
			if err == nil || !isPanic && errors.Is(err, ctx.Err()) {
				return nil
			}
			log.Error("task did not stop cleanly", taskErrAttrs(err)...)
			return fmt.Errorf("task %s: %w", t.Name(), err)
		}
		if err == nil {
			log.Info("task finished")
			return nil
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			log.Error("task failed; stopping every task", "err", err)
			stop()
			return fmt.Errorf("task %s: %w", t.Name(), fatal.err)
		}
		if time.Since(start) >= maxB {
			failures = 0
		}
		failures++
		wait := backoff(minB, maxB, failures)
		msg := "task failed; restarting"
		if isPanic {
			msg = "task panicked; restarting"
		}
		log.Error(msg, append(taskErrAttrs(err), "failures", failures, "restart_in", wait)...)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
}

func (r *Runner) backoffs() (minB, maxB time.Duration) {
	minB, maxB = r.MinBackoff, r.MaxBackoff
	if minB <= 0 {
		minB = DefaultMinBackoff
	}
	if maxB <= 0 {
		maxB = DefaultMaxBackoff
	}
	return minB, max(minB, maxB)
}

// backoff is the wait after the given number (≥ 1) of failures in a row:
// minB doubled failures-1 times, at most maxB.
func backoff(minB, maxB time.Duration, failures int) time.Duration {
	d := minB
	for i := 1; i < failures && d < maxB; i++ {
		if d > maxB/2 {
			return maxB // and no overflow
		}
		d *= 2
	}
	return min(d, maxB)
}

// panicError is a panic of a task's Run, recovered.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

func runOnce(ctx context.Context, t Task) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{value: v, stack: debug.Stack()}
		}
	}()
	return t.Run(ctx)
}

func taskErrAttrs(err error) []any {
	var p *panicError
	if errors.As(err, &p) {
		return []any{"panic", fmt.Sprint(p.value), "stack", string(p.stack)}
	}
	return []any{"err", err}
}
