package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devid-ssh/devid/adminapi"
	"github.com/devid-ssh/devid/agentd"
	"github.com/devid-ssh/devid/agentd/agenttest"
	"github.com/devid-ssh/devid/caserver/catest"
	"github.com/devid-ssh/devid/enroll"
	"github.com/devid-ssh/devid/enroltoken"
	"github.com/devid-ssh/devid/hostd"
	"github.com/devid-ssh/devid/internal/sshdrun"
	"github.com/devid-ssh/devid/internal/sshdtest"
	"github.com/devid-ssh/devid/inventory"
	"github.com/devid-ssh/devid/tpm"
	"github.com/devid-ssh/devid/tpm/swtpmtest"
)

// TestEnrolmentByToken is onboarding from an MDM export, end to end: a
// "host" and a "laptop" that the inventory knows only from MDM exports (a
// Jamf Pro console CSV and an Intune managedDevices JSON: name, serial
// number, owner, OS; no EK) become active by a one-time
// token alone — devid-hostd with the token file in its configuration, its
// host key in its TPM, serving a real sshd; devid-agent with its own — and
// the laptop's owner logs in to the host over real ssh, each side trusting
// the other only through the CA. Then the refusals, with their messages: a
// token used already, presented by another TPM; a token for another
// device, of another kind or name; an expired token (the CA's clock moved
// past its expiry). devid-agent renewing, and devid-hostd restarted and
// renewing, with their used tokens still configured, are just the devices
// they are. The admin API (devid device show) tells what each device holds.
func TestEnrolmentByToken(t *testing.T) {
	sshdtest.Need(t, "swtpm", "swtpm_setup", "ssh-add")
	clk := new(offsetClock)
	ca := catest.StartClock(t, nil, clk.Now)
	admin, err := adminapi.NewClient(ca.URL, ca.Roots, &ca.AdminCert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddUser(adminapi.NewUser{Email: "ann@example.com", Login: "ann"}); err != nil {
		t.Fatal(err)
	}
	// The laptops as Jamf Pro's console exports them, the host as
	// Microsoft Graph lists Intune's managed devices: no EK in either.
	jamf := "Computer Name,Serial Number,Username,Email Address,Operating System,Operating System Version,Jamf Pro Computer ID\n" +
		"laptop-1,C02ANN001,ann,Ann@Example.com,macOS,15.1,41\n" +
		"laptop-2,C02BOB002,,,macOS,15.1,42\n"
	rep, err := admin.ImportMDM("jamf.csv", []byte(jamf), adminapi.MDMImport{Format: "jamf"}, false)
	if err != nil || rep.Counts[adminapi.Added] != 2 {
		t.Fatalf("Jamf import: %+v, %v", rep, err)
	}
	intune := `{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#deviceManagement/managedDevices",
  "value": [{"id": "8d3c1f2e-0000-4000-8000-00000000a001", "deviceName": "web-1", "serialNumber": "VMW-4711",
    "operatingSystem": "Linux", "osVersion": "Debian 12", "complianceState": "compliant"}]}`
	rep, err = admin.ImportMDM("managedDevices.json", []byte(intune), adminapi.MDMImport{Format: "intune", Kind: "host"}, false)
	if err != nil || rep.Counts[adminapi.Added] != 1 {
		t.Fatalf("Intune import: %+v, %v", rep, err)
	}
	for _, name := range []string{"web-1", "laptop-1", "laptop-2"} {
		if d, err := admin.Device(name); err != nil || d.Status != adminapi.StatusPending {
			t.Fatalf("%s after the import: %+v, %v; want pending", name, d, err)
		}
	}
	dir := t.TempDir()
	tokenFile := func(name string) (string, *adminapi.IssuedToken) {
		t.Helper()
		it, err := admin.IssueToken(name, "")
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, name+".token")
		if err := os.WriteFile(f, []byte(it.Token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f, it
	}
	hostTPM, laptopTPM, intruderTPM := swtpmtest.NewServed(t), swtpmtest.NewServed(t), swtpmtest.NewServed(t)

	// The laptop: devid-agent with its token.
	laptopTok, laptopIt := tokenFile("laptop-1")
	agent := agenttest.New(t, ca, laptopTPM.Addr)
	agent.SetConfig(t, "enrolment", map[string]string{"tokenFile": laptopTok, "name": "laptop-1"})
	agent.Restart(t)
	st := agent.WaitCertificate(t, 0)
	if st.Certificate.KeyID != laptopTPM.EK.DeviceID || !slices.Contains(st.Certificate.Principals, "login:ann") {
		t.Fatalf("the laptop's certificate: key ID %s, principals %q; want its TPM's device ID %s and login:ann",
			st.Certificate.KeyID, st.Certificate.Principals, laptopTPM.EK.DeviceID)
	}
	agent.WaitStatus(t, "known_hosts and the KRL", func(s *agentd.Status) bool { return s.HostCAKeys > 0 && s.KRLVersion > 0 })

	// The host: devid-hostd with its token, its host key in its TPM; no
	// principals asked for, so the CA gives the inventory's name, web-1.
	// sshd lets in the certificates of ann's devices.
	hostTok, _ := tokenFile("web-1")
	h := newTPMHost(t, ca, hostTPM.Addr, "login:ann")
	editConfig(t, h.cfgFile, func(cfg map[string]any) {
		delete(cfg, "principals")
		cfg["enrolment"] = map[string]string{"tokenFile": hostTok, "name": "web-1"}
	})
	h.start(t)
	hst := h.waitServing(t, 0)
	if hc := readCert(t, h.certFile); hc.KeyId != hostTPM.EK.DeviceID || !slices.Equal(hc.ValidPrincipals, []string{"web-1"}) {
		t.Fatalf("the host certificate: key ID %s, principals %q; want %s, web-1", hc.KeyId, hc.ValidPrincipals, hostTPM.EK.DeviceID)
	}

	// The login, over real ssh: the laptop's key and certificate from
	// devid-agent, the host known by its certificate from the CA.
	client := sshdrun.Client{Agent: agent.Socket, KnownHosts: agent.Paths.KnownHosts, HostKeyAlias: "web-1",
		Options: []string{"RevokedHostKeys=" + agent.Paths.KRL}, Verbose: true}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := h.sshd.Server.SSH(ctx, client)
	if serial, _ := sshdtest.HostCertSerial(out); err != nil || serial != hst.HostCert.Serial {
		t.Fatalf("ann's login from the laptop to the host: serial %d, %v; want the host certificate %d\n%s", serial, err, hst.HostCert.Serial, out)
	}

	// What the CA says each device holds.
	for name, want := range map[string]struct {
		id, certType string
		tpm          *swtpmtest.Served
	}{"web-1": {hostTPM.EK.DeviceID, "host", hostTPM}, "laptop-1": {laptopTPM.EK.DeviceID, "user", laptopTPM}} {
		d, err := admin.DeviceDetails(name)
		if err != nil {
			t.Fatal(err)
		}
		if d.ID != want.id || d.Status != adminapi.StatusActive || d.Token == nil || d.Token.State != "used" || d.Token.BoundTo != want.id ||
			d.LastAttestation == nil || len(d.Certificates) == 0 || d.Certificates[0].Type != want.certType || d.Certificates[0].KeyID != want.id {
			b, _ := json.MarshalIndent(d, "", "  ")
			t.Fatalf("%s: %s", name, b)
		}
	}

	// devid-agent renewing now, its token still configured: the CA takes
	// it as the device it bound, and renews.
	agent.Signal(t, syscall.SIGUSR1)
	st2 := agent.WaitCertificate(t, st.Certificate.Serial)
	if st2.Certificate.KeyID != laptopTPM.EK.DeviceID || st2.LastError != "" {
		t.Fatalf("renewal with the used token still configured: %+v", st2)
	}

	// devid-hostd restarted with its token still configured, and asked to
	// renew: a fresh attestation, as the device it is.
	h.stop(t)
	h.start(t)
	pid := h.proc.Process.Pid
	waitFor(t, time.Minute, "the restarted devid-hostd's status", func() bool {
		s, err := hostd.ReadStatus(filepath.Join(h.dir, "run"))
		return err == nil && s.PID == pid
	})
	h.proc.Process.Signal(syscall.SIGUSR1)
	if hst2 := h.waitServing(t, hst.HostCert.Serial); readCert(t, h.certFile).KeyId != hostTPM.EK.DeviceID {
		t.Fatalf("the host certificate after a restart with the used token: %+v", hst2.HostCert)
	}

	// Refusals, each with its reason, from another machine's TPM.
	refused := func(what string, tok string, kind, name, want string) {
		t.Helper()
		parsed, err := enroltoken.Parse(tok)
		if err != nil {
			t.Fatal(err)
		}
		tp, err := tpm.OpenAddress(intruderTPM.Addr, &tpm.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		cl := enroll.New(ca.URL, ca.Roots, slog.New(slog.NewTextHandler(io.Discard, nil)))
		cl.SetEnrolment(enroll.Token(parsed, kind, name))
		att, err := cl.Attest(ctx, tp)
		if err == nil {
			att.Close()
			t.Fatalf("%s: the intruder's TPM was attested", what)
		}
		var ce *enroll.CAError
		if !errors.As(err, &ce) || ce.Status != 403 || !strings.Contains(ce.Message, want) {
			t.Fatalf("%s: %v; want a 403 saying %q", what, err, want)
		}
		if strings.Contains(err.Error(), tok) {
			t.Fatalf("%s: the refusal quotes the token: %v", what, err)
		}
	}
	laptopDev, err := admin.DeviceDetails("laptop-1")
	if err != nil {
		t.Fatal(err)
	}
	refused("the laptop's token, used already", laptopIt.Token, "workstation", "",
		fmt.Sprintf(`enrolment token already used (by device "laptop-1", %s, at %s)`, laptopTPM.EK.DeviceID, laptopDev.Token.Used.Format(time.RFC3339)))
	other, err := admin.IssueToken("laptop-2", "")
	if err != nil {
		t.Fatal(err)
	}
	refused("a workstation's token on a host", other.Token, "host", "",
		`enrolment token for another device: it is for "laptop-2", a workstation, and this device is a host`)
	refused("laptop-2's token on a machine that says it is laptop-3", other.Token, "workstation", "laptop-3",
		`enrolment token for another device: it is for "laptop-2", and this device says it is "laptop-3"`)
	clk.Set(inventory.DefaultTokenTTL + time.Second)
	refused("an expired token", other.Token, "workstation", "",
		fmt.Sprintf(`enrolment token for device "laptop-2" expired at %s: issue a new one with `+"`devid device token laptop-2`", other.Expires.Format(time.RFC3339)))
	clk.Set(0)
	if d, err := admin.Device("laptop-2"); err != nil || d.Status != adminapi.StatusPending {
		t.Fatalf("laptop-2 after the refusals: %+v, %v; want still pending", d, err)
	}
	if _, err := admin.Device(intruderTPM.EK.DeviceID); err == nil {
		t.Fatal("the intruder's TPM is a device")
	}
}

// editConfig rewrites a JSON configuration file.
func editConfig(t *testing.T, file string, edit func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	edit(cfg)
	if b, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// offsetClock is the CA's clock: the time now plus an offset the test sets.
// devid's parts of the CA read it, step-ca's signing keeps the real time:
// the test moves it only to show a time-bound refusal, and sets it back.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Set sets the clock to the real time plus d.
func (c *offsetClock) Set(d time.Duration) { c.offset.Store(int64(d)) }
