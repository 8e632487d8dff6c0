package pkgbuild

// program is one of devid's binaries, as its manual page presents it.
type program struct {
	Name    string
	Section int    // 1: a user's or operator's command; 8: a daemon, or sshd's helper
	Summary string // the NAME line, after the dash
	// Synopsis, if set, is the synopsis lines of a program whose help has
	// no command list (devid-principals).
	Synopsis    string
	Description string // paragraphs, separated by blank lines
	Exit        string
	Files       [][2]string // path, what it is
	SeeAlso     []string
}

const exitCodes = "0 on success, 1 when the operation failed, 2 for a wrong command line."

// programs are the binaries the packages ship, in the order they are built.
var programs = []program{
	{
		Name: "devid", Section: 1,
		Summary: "manage which machines may reach company hosts over SSH",
		Description: `devid is the operator's command of devid: it pins the CA (bootstrap), registers, onboards, quarantines and retires devices, manages users and collections, revokes certificates and reads the audit trail through the CA's admin API, with an admin client certificate.

On any machine it also reads the TPM (devid tpm: the endorsement keys and the device ID to register), enrols by hand (devid enroll) and builds, inspects and queries OpenSSH KRLs offline (devid krl).

Every command that lists --json prints JSON with it.`,
		Exit: exitCodes + " devid krl query follows ssh-keygen -Q.",
		Files: [][2]string{
			{"$XDG_CONFIG_HOME/devid/config.json", "the CA's URL, the pinned root and the admin certificate, as devid bootstrap writes them (default ~/.config/devid/config.json; $DEVID_CONFIG overrides)"},
		},
		SeeAlso: []string{"devid-ca(8)", "devid-hostd(8)", "devid-agent(1)", "devid-principals(8)", "ssh-keygen(1)"},
	},
	{
		Name: "devid-ca", Section: 8,
		Summary:     "devid's CA: device inventory and SSH certificates, built on step-ca",
		Description: `devid-ca runs step-ca's authority as a library and adds the device inventory, TPM attestation and the admin API on the same HTTPS port. devid-ca init creates a CA in a directory; devid-ca serve serves it (the devid-ca.service unit runs it as the devid-ca user).`,
		Exit:        exitCodes,
		Files: [][2]string{
			{"/var/lib/devid-ca", "the CA's directory (the unit's): devid-ca.json, certs/, secrets/ (mode 0700), admin/, db/"},
			{"/var/lib/devid-ca/devid-ca.json", "the configuration devid-ca init writes"},
		},
		SeeAlso: []string{"devid(1)", "devid-hostd(8)", "devid-agent(1)", "step-ca(1)"},
	},
	{
		Name: "devid-hostd", Section: 8,
		Summary: "keep this host's SSH host certificate, user CA keys, KRL and sshd right",
		Description: `devid-hostd runs beside sshd on every host. It makes the host key in the TPM and serves it to sshd on the HostKeyAgent socket, attests the TPM to devid-ca for a host certificate and renews it, keeps TrustedUserCAKeys and the KRL (RevokedKeys) current, and reloads sshd after checking its configuration with sshd -t.

The devid-hostd.socket and devid-hostd.service units run it; they are installed but not enabled. Set a host up in the order the README's "Set up a host" gives: the configuration, then systemctl enable --now devid-hostd.socket devid-hostd.service, and only then the sshd snippet /usr/share/devid/sshd_config.d/devid.conf in /etc/ssh/sshd_config.d/.`,
		Exit: exitCodes + " 3 (status, renew): devid-hostd is not running with this configuration's state directory.",
		Files: [][2]string{
			{"/etc/devid/hostd.json", "the configuration (example: /usr/share/doc/devid-host/examples/hostd.json)"},
			{"/etc/devid/root_ca.crt", "the CA's root certificate, pinned"},
			{"/etc/ssh/devid", "the files devid-hostd keeps for sshd: the TPM host key's public half, the host certificate, user_ca.pub, revoked.krl"},
			{"/var/lib/devid-hostd", "its state: the host key's TPM key file, status.json"},
			{"/run/devid-hostd/hostkey.sock", "sshd's HostKeyAgent socket, held by devid-hostd.socket"},
			{"/usr/share/devid/sshd_config.d/devid.conf", "the sshd snippet, to copy to /etc/ssh/sshd_config.d/ once devid-hostd has written its files"},
		},
		SeeAlso: []string{"devid-principals(8)", "devid(1)", "sshd(8)", "sshd_config(5)", "systemd.socket(5)"},
	},
	{
		Name: "devid-principals", Section: 8,
		Summary: "sshd's AuthorizedPrincipalsCommand for devid certificates",
		Synopsis: `devid-principals [--policy PATH] [--log syslog|stderr] ACCOUNT CERT-TYPE BASE64-CERT
devid-principals check [--policy PATH]
devid-principals explain [--policy PATH] ACCOUNT CERT.pub`,
		Description: `At every certificate login sshd runs devid-principals as the devid-principals user: it reads the local policy and prints the certificate's device-ID principal when the policy lets that device and user into the account, and nothing otherwise. It fails closed, decides within 500 ms and uses no network. Each decision is one line in syslog (authpriv, tag devid-principals).`,
		Exit:        "The helper exits 0 whether it allows or denies, and 2 for a wrong command line (printing nothing). check: 0 when the policy parses, 1 otherwise. explain: 0 allowed, 1 denied.",
		Files: [][2]string{
			{"/etc/devid/principals.conf", "the policy: lines of an account (or *) and the principals a certificate must all carry"},
			{"/usr/libexec/devid/devid-principals", "the program, where the sshd snippet names it (root-owned, as sshd requires)"},
		},
		SeeAlso: []string{"devid-hostd(8)", "sshd_config(5)", "sshd(8)"},
	},
	{
		Name: "devid-agent", Section: 1,
		Summary: "keep your SSH key in this machine's TPM, its certificate current, and serve both to ssh",
		Description: `devid-agent runs as the user (systemd --user: devid-agent.socket and devid-agent.service) and never as root. It makes an SSH key in the machine's TPM, attests the TPM to devid-ca for a user certificate and renews it, and serves key and certificate to ssh with the ssh-agent protocol. It also keeps a known_hosts file of the CA's host CA keys and the CA's KRL for ssh's RevokedHostKeys.

Enable it once per user: systemctl --user enable --now devid-agent.socket devid-agent.service; then devid-agent ssh-config >> ~/.ssh/config. The user needs the TPM (/dev/tpmrm0; the group tss on Debian and Ubuntu).`,
		Exit: exitCodes,
		Files: [][2]string{
			{"/etc/devid/agent.json", "the configuration, one for the machine"},
			{"~/.local/state/devid", "the key's TPM key file, the certificate, known_hosts, revoked_host_keys.krl, status.json"},
			{"$XDG_RUNTIME_DIR/devid-agent.sock", "the agent socket (devid-agent.socket)"},
		},
		SeeAlso: []string{"devid(1)", "ssh(1)", "ssh-add(1)", "ssh_config(5)", "systemd.socket(5)"},
	},
}

func programByName(name string) program {
	for _, p := range programs {
		if p.Name == name {
			return p
		}
	}
	panic("pkgbuild: no program " + name)
}
