package principalscli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/principals"
)

// Deadline bounds a decision: past it the helper denies and exits 0, well
// before sshd's LoginGraceTime.
const Deadline = 500 * time.Millisecond

// helperArgs are the helper's command line.
type helperArgs struct {
	policy, log                string
	account, certType, certB64 string
}

// parseHelperArgs parses [--policy PATH] [--log syslog|stderr] ACCOUNT
// CERT-TYPE BASE64-CERT. In sshd's form (see sshdForm) the last three
// arguments are never flags. Flags take one or two dashes, and their value
// after = or as the next argument.
func parseHelperArgs(args []string) (*helperArgs, error) {
	a := &helperArgs{policy: principals.DefaultPath, log: "syslog"}
	flags, pos := args, []string(nil)
	if sshdForm(args) {
		flags, pos = args[:len(args)-3], args[len(args)-3:]
	}
	for len(flags) > 0 && strings.HasPrefix(flags[0], "-") {
		if flags[0] == "--" {
			flags = flags[1:]
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(flags[0][1:], "-"), "=")
		flags = flags[1:]
		if !hasValue {
			if len(flags) == 0 {
				return nil, fmt.Errorf("flag -%s needs a value", name)
			}
			value, flags = flags[0], flags[1:]
		}
		switch name {
		case "policy":
			a.policy = value
		case "log":
			if value != "syslog" && value != "stderr" {
				return nil, fmt.Errorf("--log %q: want syslog or stderr", value)
			}
			a.log = value
		default:
			return nil, fmt.Errorf("unknown flag -%s", name)
		}
	}
	if pos = append(flags, pos...); len(pos) != 3 {
		return nil, fmt.Errorf("want ACCOUNT CERT-TYPE BASE64-CERT, got %d argument(s)", len(pos))
	}
	a.account, a.certType, a.certB64 = pos[0], pos[1], pos[2]
	return a, nil
}

// run is one decision of the helper: whichever of the decision and the
// watchdog finishes it first prints (or not) and logs, exactly once.
type run struct {
	args  *helperArgs
	env   *command.Env
	start time.Time
	cert  atomic.Pointer[principals.Certificate] // once parsed, for the log
	done  atomic.Bool
}

// outcome is how a decision ended.
type outcome struct {
	decision principals.Decision
	// failure is why the helper could not decide (a bad certificate, a
	// missing or broken policy, a panic, the deadline); it denies.
	failure string
}

// helper is what sshd runs: print the principal to allow, nothing to deny,
// exit 0 either way; exit 2 for a wrong command line.
//
// The decision runs on the calling goroutine; a watchdog timer denies and
// exits the process at Deadline if it has not finished by then (a policy
// that is a FIFO, or on a hung file system), and a panic denies.
func helper(args []string, env *command.Env) int {
	r := &run{env: env, start: time.Now()}
	a, err := parseHelperArgs(args)
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: %v (see %s --help)\n", name, err, name)
		if l := openLog("syslog", nil); l != nil { // sshd discards standard error
			l.write(sevErr, "usage", "reason", err.Error())
			l.close()
		}
		return command.ExitUsage
	}
	r.args = a
	watchdog := time.AfterFunc(Deadline, func() {
		if r.finish(outcome{failure: fmt.Sprintf("no decision within %v: denied", Deadline)}) {
			os.Exit(command.ExitOK)
		}
	})
	defer watchdog.Stop()
	defer func() {
		if p := recover(); p != nil {
			r.finish(outcome{failure: fmt.Sprintf("internal error: %v", p)})
		}
	}()
	r.finish(r.decide())
	return command.ExitOK
}

// decide reads the certificate and the policy and decides.
func (r *run) decide() outcome {
	cert, err := principals.ParseCertificate(r.args.certType, r.args.certB64)
	if err != nil {
		return outcome{failure: err.Error()}
	}
	r.cert.Store(cert)
	d, err := principals.DecideFile(r.args.policy, r.args.account, cert)
	if err != nil {
		return outcome{failure: err.Error()}
	}
	return outcome{decision: d}
}

// finish prints the principal if o allows the login and logs the decision,
// unless the run was already finished; it reports whether it finished it.
func (r *run) finish(o outcome) bool {
	if !r.done.CompareAndSwap(false, true) {
		return false
	}
	msg := "deny"
	if p := o.decision.Principal(); p != "" && o.failure == "" {
		if _, err := io.WriteString(r.env.Stdout, p+"\n"); err != nil {
			o.failure = "writing the principal for sshd: " + err.Error()
		} else {
			msg = "allow"
		}
	}
	a := r.args
	fields := make([]string, 0, 16)
	fields = append(fields, "account", a.account)
	if c := r.cert.Load(); c != nil {
		id := o.decision.DeviceID
		if id == "" {
			id, _ = c.DeviceID() // "" when it has none, or not as devid's CA issues them
		}
		fields = append(fields, "device_id", id, "key_id", c.KeyID, "serial", strconv.FormatUint(c.Serial, 10))
	}
	fields = append(fields, "policy", a.policy)
	sev := sevInfo
	switch {
	case o.failure != "":
		sev = sevErr
		fields = append(fields, "reason", o.failure)
	case msg == "allow":
		fields = append(fields, "line", strconv.Itoa(o.decision.Rule.Line), "rule", o.decision.Rule.String())
	default:
		fields = append(fields, "reason", o.decision.Reason)
	}
	us := time.Since(r.start).Microseconds()
	fields = append(fields, "elapsed", strconv.FormatInt(us/1000, 10)+"."+strconv.FormatInt(us%1000/100, 10)+strconv.FormatInt(us%100/10, 10)+"ms")
	l := openLog(a.log, r.env.Stderr)
	l.write(sev, msg, fields...)
	l.close()
	return true
}
