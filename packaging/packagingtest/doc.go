// Package packagingtest checks the files devid ships for operators, with
// the tools that will read them:
//
//   - packaging/devid-hostd.service with systemd-analyze (verify, and
//     security for its hardening), and the unit's claim that root without
//     capabilities can do what devid-hostd needs, with setpriv;
//   - packaging/devid-hostd.socket with its service, and
//     contrib/systemd/ssh.service.d/devid-hostkey.conf as a drop-in of the
//     host's ssh.service beside both (no ordering cycle), with
//     systemd-analyze verify; packaging/user/devid-agent.{socket,service}
//     with systemd-analyze --user verify;
//   - packaging/devid-ca.service with systemd-analyze (verify; security,
//     at most 2.5) and against devid-ca itself (its config file's name in
//     the state directory, a default port that needs no capability);
//   - packaging/hostd.json.example against the unit and the sshd snippet:
//     the paths in the three files must agree;
//   - contrib/sshd_config.d/devid.conf with the real sshd (sshd -t, sshd -T),
//     its TPM host key served by package sshagent at HostKeyAgent as
//     devid-hostd serves it, and without the agent;
//   - contrib/prometheus/devid-hostd.rules.yml with promtool check rules and
//     the unit tests in devid-hostd.rules_test.yml with promtool test rules,
//     and both against the metric names devid-hostd's own registry holds;
//   - contrib/prometheus/devid-ca.rules.yml likewise, against the names
//     devid-ca's registry holds (caserver.MetricNames);
//   - contrib/grafana/devid-fleet.json: every metric its panels' PromQL
//     names is one devid-hostd or devid-ca exports;
//   - README.md's host set-up block, run as written (TestREADMEHostSetup) by
//     bash as root against a real devid-ca and a software TPM, in a private
//     mount namespace whose /etc, /usr and /var are overlays in the test's
//     directory and whose systemctl is the test binary (which makes
//     devid-hostd.socket's socket and passes it to devid-hostd), then a
//     login to the sshd it set up, which signs with the TPM host key;
//   - contrib/README.md's alert tables against the rules files.
//
// A test whose tool is missing skips, or fails when the environment has
// CI=true. The Debian packages are systemd, util-linux, openssh-server,
// openssh-client and prometheus (for promtool); .ci/run installs them.
//
// sshd -t refuses to run without its privilege separation directory,
// /run/sshd, which only exists while ssh.service runs (or has run since
// boot). Where it is missing the tests run sshd in a private mount namespace
// with an empty tmpfs on /run holding /run/sshd (as root directly, otherwise
// in a user namespace), so they never change the host.
package packagingtest
