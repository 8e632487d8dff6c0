package containertest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/debimage"
	"github.com/devid-ssh/devid/internal/dockertest"
	"github.com/devid-ssh/devid/packaging/containerpkgs"
)

// waitLimit bounds every condition polled: it only bounds a hang.
const waitLimit = 3 * time.Minute

// setupTPM runs, in the container, what stands beside the host but the
// CA (devid-ca.service, caService): a software TPM (swtpm, a transient
// unit) standing in for /dev/tpmrm0, and the host registered with the CA
// as pending, by the CA's first admin, its enrolment token installed as
// /etc/devid/enrolment-token. No retry: the CA serves once systemctl
// enable --now has returned (Type=notify).
const setupTPM = `
mkdir -p /var/lib/devid-swtpm
swtpm_setup --tpm2 --tpmstate /var/lib/devid-swtpm --create-ek-cert >/dev/null
systemd-run --quiet --unit swtpm swtpm socket --tpm2 --tpmstate dir=/var/lib/devid-swtpm \
	--flags not-need-init,startup-clear --server type=unixio,path=/run/swtpm.sock
devid bootstrap --ca-url https://localhost:8443 --fingerprint "$CA_FINGERPRINT" \
	--admin-cert /var/lib/devid-ca/admin/admin.crt --admin-key /var/lib/devid-ca/admin/admin.key >/dev/null
devid device add --serial SD-1 --name sdhost --kind host --host-names localhost >/dev/null
install -d -m 0755 /etc/devid
devid device token sdhost --out /etc/devid/enrolment-token >/dev/null
chmod 0600 /etc/devid/enrolment-token
`

// hostSetup is the README's "Set up a host" with the packages installed
// (step 1 is the package): pin the CA by its fingerprint, configure
// devid-hostd (the swtpm, the enrolment token) and the policy, start
// devid-hostd with its socket (returning once it is READY), and only then
// the sshd snippet, checked by sshd -t, and a reload.
const hostSetup = `
CA_URL=https://localhost:8443
TPM=unix:/run/swtpm.sock
pin=$(mktemp -d)
DEVID_CONFIG=$pin/config.json devid bootstrap --ca-url "$CA_URL" --fingerprint "$CA_FINGERPRINT" >/dev/null
install -m 0644 "$pin/root_ca.crt" /etc/devid/root_ca.crt
rm -r "$pin"
cat > /etc/devid/hostd.json <<END
{"version": 1, "caUrl": "$CA_URL", "root": "/etc/devid/root_ca.crt", "tpm": "$TPM",
 "enrolment": {"tokenFile": "/etc/devid/enrolment-token", "name": "sdhost"}}
END
cat > /etc/devid/principals.conf <<'END'
*           login:{account}
END
devid-hostd check >/dev/null
/usr/libexec/devid/devid-principals check --policy /etc/devid/principals.conf
systemctl daemon-reload
systemctl enable --now devid-hostd.socket devid-hostd.service
test -s /etc/ssh/devid/ssh_host_tpm_key-cert.pub -a -s /etc/ssh/devid/user_ca.pub -a -s /etc/ssh/devid/revoked.krl
install -m 0644 /usr/share/devid/sshd_config.d/devid.conf /etc/ssh/sshd_config.d/
sshd -t && test -z "$(sshd -t 2>&1)" && systemctl reload ssh
`

// TestSystemd runs systemd as PID 1 in a container of each image (see
// dockertest.SystemdArgs for what it takes), installs devid-ca and
// devid-host there, and sets both up as the README says.
//
// The CA runs under the packaged devid-ca.service, hardening and all (see
// startCAService, killCAService and stopCAService): READY=1, the watchdog,
// HTTPS and metrics, the devid-ca user, a restart after SIGKILL with its
// store intact, a clean stop.
//
// On the host, the packaged units really start
// (devid-hostd.socket and .service, ssh.service with devid's drop-in);
// Type=notify (enable --now returns with the files in place) and the
// watchdog (a ping after READY) work; a renewal has devid-hostd reload
// sshd through systemd (ReloadUnit over D-Bus: systemd's "Reloaded
// ssh.service" in the journal), and sshd presents the new certificate,
// signed through the socket with the key in the TPM; `systemctl kill -s
// KILL devid-hostd` is followed by systemd's restart, the files in
// /etc/ssh/devid intact and sshd still signing.
func TestSystemd(t *testing.T) {
	dockertest.Need(t)
	pkgs := containerpkgs.ForTest(t)
	for _, suite := range debimage.Suites() {
		t.Run(suite, func(t *testing.T) {
			t.Parallel()
			img := dockertest.Image(t, suite)
			c := dockertest.Start(t, append(dockertest.SystemdArgs(t), "--network", "none", "--hostname", "sdhost", img, "/lib/systemd/systemd")...)
			b := box{t, c}
			sh, must, show := b.sh, b.must, b.show

			dockertest.Poll(t, waitLimit, "systemd to finish booting", func() (bool, string) {
				state, _ := sh("systemctl is-system-running || true")
				return state == "running" || state == "degraded", state
			})
			if failed := must("failed units", "systemctl --failed --no-legend --plain"); failed != "" {
				t.Errorf("units failed at boot:\n%s", failed)
			}
			dockertest.Install(t, c, pkgs, "devid", "devid-host", "devid-ca")
			fp := startCAService(b, suite)
			must("the TPM and the host's registration", setupTPM, "CA_FINGERPRINT="+fp)
			// The CA survives a crash, with its store: the enrolment that
			// follows uses the token issued before.
			caReady := killCAService(b, "sdhost")
			start := time.Now()
			must("the README's host set-up", hostSetup, "CA_FINGERPRINT="+fp)
			t.Logf("%s: systemctl enable --now and the snippet took %s", suite, time.Since(start).Round(10*time.Millisecond))

			// The units run; Type=notify: READY came with the files.
			if out := must("units", "systemctl is-active devid-hostd.socket devid-hostd.service ssh.service"); out != "active\nactive\nactive" {
				t.Fatalf("is-active devid-hostd.socket devid-hostd.service ssh.service:\n%s", out)
			}
			if dropIns := show("ssh.service", "DropInPaths")["DropInPaths"]; !strings.Contains(dropIns, "devid-hostkey.conf") {
				t.Errorf("ssh.service's drop-ins: %q, want devid-hostkey.conf", dropIns)
			}
			p := show("devid-hostd.service", "Type", "WatchdogUSec", "StatusText", "WatchdogTimestampMonotonic", "MainPID", "NRestarts")
			if p["Type"] != "notify" || p["WatchdogUSec"] != "1min" || p["StatusText"] == "" {
				t.Errorf("devid-hostd.service: %v, want Type=notify, WatchdogUSec=1min and a status text", p)
			}
			st := status(t, c)
			if st.HostCert == nil || st.SSHDReloads == 0 {
				t.Fatalf("devid-hostd's status after enable --now: %+v", st)
			}
			// sshd signs with the TPM host key through the socket and
			// presents the certificate.
			dockertest.Poll(t, waitLimit, "sshd presenting the host certificate", func() (bool, string) {
				serial, err := dockertest.PresentedSerial(c, "localhost")
				return err == nil && serial == st.HostCert.Serial, fmt.Sprintf("%d, %v (want %d)", serial, err, st.HostCert.Serial)
			})

			// The watchdog: a ping after READY moves WatchdogTimestamp.
			ready := p["WatchdogTimestampMonotonic"]
			dockertest.Poll(t, waitLimit, "a watchdog ping", func() (bool, string) {
				now := show("devid-hostd.service", "WatchdogTimestampMonotonic", "ActiveState")
				return now["WatchdogTimestampMonotonic"] != ready && now["ActiveState"] == "active", fmt.Sprint(now)
			})

			// A renewal: devid-hostd reloads sshd through systemd.
			reloaded := func() int {
				n, _ := strconv.Atoi(must("the journal", "journalctl -u ssh.service -o cat | grep -c 'Reloaded ssh.service' || true"))
				return n
			}
			before, serial := reloaded(), st.HostCert.Serial
			must("devid-hostd renew", "devid-hostd renew")
			dockertest.Poll(t, waitLimit, "the renewal, sshd reloaded by systemd and presenting the new certificate", func() (bool, string) {
				st := status(t, c)
				if st.HostCert == nil || st.HostCert.Serial == serial {
					return false, "not renewed yet"
				}
				got, err := dockertest.PresentedSerial(c, "localhost")
				return reloaded() > before && got == st.HostCert.Serial, fmt.Sprintf("reloads in the journal %d (were %d), sshd presents %d (%v), status %d", reloaded(), before, got, err, st.HostCert.Serial)
			})

			// kill -9: systemd restarts devid-hostd; the files stay, and
			// sshd goes on signing through the socket systemd holds.
			files := must("the files", "sha256sum /etc/ssh/devid/*")
			p = show("devid-hostd.service", "MainPID", "NRestarts")
			dockertest.Exec(t, c, "systemctl", "kill", "-s", "KILL", "devid-hostd.service")
			dockertest.Poll(t, waitLimit, "systemd to restart devid-hostd", func() (bool, string) {
				now := show("devid-hostd.service", "MainPID", "NRestarts", "ActiveState", "SubState")
				return now["ActiveState"] == "active" && now["SubState"] == "running" && now["MainPID"] != p["MainPID"] && now["MainPID"] != "0" && now["NRestarts"] != p["NRestarts"], fmt.Sprint(now)
			})
			if after := must("the files", "sha256sum /etc/ssh/devid/*"); after != files {
				t.Errorf("/etc/ssh/devid changed across the kill:\n%s\nthen\n%s", files, after)
			}
			final := status(t, c).HostCert.Serial
			dockertest.Poll(t, waitLimit, "sshd signing after the restart", func() (bool, string) {
				got, err := dockertest.PresentedSerial(c, "localhost")
				return err == nil && got == final, fmt.Sprintf("%d, %v", got, err)
			})

			stopCAService(b, caReady)
		})
	}
}

// status is devid-hostd's status.json in the container.
func status(t *testing.T, c string) *hostd.StatusData {
	t.Helper()
	var st hostd.StatusData
	if err := json.Unmarshal([]byte(dockertest.Exec(t, c, "cat", "/run/devid-hostd/status.json")), &st); err != nil {
		t.Fatalf("status.json: %v", err)
	}
	return &st
}
