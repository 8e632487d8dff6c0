package pkgbuild

import "io/fs"

// pkgFile is a file of the repository that a package installs.
type pkgFile struct {
	Src    string // relative to the repository's root
	Dst    string
	Mode   fs.FileMode
	Format string // "deb" or "rpm" for a file of one format only
}

// pkgDef is one package, for both formats.
type pkgDef struct {
	Name        string
	Description string // first line: the summary
	// Programs maps a program (see programs) to where it is installed.
	Programs map[string]string
	Files    []pkgFile
	// Dirs are directories the package owns (rpm removes them with it),
	// mode 0755.
	Dirs []string
	// Depends, Recommends and Suggests, per format. "{{version}}" is
	// replaced by the version.
	Depends, Recommends, Suggests map[string][]string
	// Scripts: packaging/scripts/NAME/{postinst,prerm,postrm}.
	Scripts bool
}

const (
	formatDeb = "deb"
	formatRPM = "rpm"
)

// packages are what Build makes, each as a .deb and an .rpm.
var packages = []pkgDef{
	{
		Name: "devid",
		Description: `devid's command: devices, users, certificates, the TPM, KRLs
devid is the operator's command of devid (pin the CA, register, quarantine
and retire devices, users, the audit trail) and, on any machine, reads the
TPM's endorsement keys and device ID for registration and builds and
queries OpenSSH KRLs.`,
		Programs: map[string]string{"devid": "/usr/bin/devid"},
	},
	{
		Name: "devid-ca",
		Description: `devid's CA: device inventory and SSH certificates (step-ca)
devid-ca runs step-ca's authority with devid's device inventory, TPM
attestation and admin API on one HTTPS port. The package installs
devid-ca.service (not enabled), the devid-ca system user and
/var/lib/devid-ca (mode 0700).`,
		Programs: map[string]string{"devid-ca": "/usr/bin/devid-ca"},
		Files: []pkgFile{
			{Src: "packaging/devid-ca.service", Dst: "/usr/lib/systemd/system/devid-ca.service", Mode: 0o644},
			{Src: "packaging/sysusers.d/devid-ca.conf", Dst: "/usr/lib/sysusers.d/devid-ca.conf", Mode: 0o644},
			{Src: "packaging/tmpfiles.d/devid-ca.conf", Dst: "/usr/lib/tmpfiles.d/devid-ca.conf", Mode: 0o644},
		},
		Depends: map[string][]string{
			formatDeb: {"devid (= {{version}})", "systemd"},
			formatRPM: {"devid = {{version}}", "systemd"},
		},
		Scripts: true,
	},
	{
		Name: "devid-host",
		Description: `devid on a host: devid-hostd and devid-principals for sshd
devid-hostd keeps the host's SSH host key in the TPM, its host certificate,
the user CA keys and the KRL right for sshd; devid-principals is sshd's
AuthorizedPrincipalsCommand. The package installs the units
devid-hostd.service and devid-hostd.socket and sshd's drop-in (none
enabled), the devid-principals account, and the sshd snippet as
/usr/share/devid/sshd_config.d/devid.conf, DISABLED: copy it to
/etc/ssh/sshd_config.d/ only after devid-hostd has written its files.`,
		Programs: map[string]string{
			"devid-hostd":      "/usr/bin/devid-hostd",
			"devid-principals": "/usr/libexec/devid/devid-principals",
		},
		Files: []pkgFile{
			{Src: "packaging/devid-hostd.service", Dst: "/usr/lib/systemd/system/devid-hostd.service", Mode: 0o644},
			{Src: "packaging/devid-hostd.socket", Dst: "/usr/lib/systemd/system/devid-hostd.socket", Mode: 0o644},
			// Debian and Ubuntu name sshd's unit ssh.service; Fedora and
			// RHEL sshd.service.
			{Src: "contrib/systemd/ssh.service.d/devid-hostkey.conf", Dst: "/usr/lib/systemd/system/ssh.service.d/devid-hostkey.conf", Mode: 0o644, Format: formatDeb},
			{Src: "contrib/systemd/ssh.service.d/devid-hostkey.conf", Dst: "/usr/lib/systemd/system/sshd.service.d/devid-hostkey.conf", Mode: 0o644, Format: formatRPM},
			{Src: "contrib/sshd_config.d/devid.conf", Dst: "/usr/share/devid/sshd_config.d/devid.conf", Mode: 0o644},
			{Src: "packaging/hostd.json.example", Dst: "/usr/share/doc/devid-host/examples/hostd.json", Mode: 0o644},
			{Src: "packaging/sysusers.d/devid-host.conf", Dst: "/usr/lib/sysusers.d/devid-host.conf", Mode: 0o644},
			{Src: "packaging/tmpfiles.d/devid-host.conf", Dst: "/usr/lib/tmpfiles.d/devid-host.conf", Mode: 0o644},
		},
		Dirs: []string{"/etc/devid", "/usr/libexec/devid", "/usr/share/devid", "/usr/share/devid/sshd_config.d", "/usr/share/doc/devid-host", "/usr/share/doc/devid-host/examples"},
		Depends: map[string][]string{
			formatDeb: {"openssh-server (>= 1:9.2)", "systemd"},
			formatRPM: {"openssh-server >= 9.2", "systemd"},
		},
		// devid bootstrap pins the CA's root; devid tpm reads the EK to
		// register the host.
		Recommends: map[string][]string{formatDeb: {"devid (= {{version}})"}, formatRPM: {"devid = {{version}}"}},
		Scripts:    true,
	},
	{
		Name: "devid-agent",
		Description: `devid on a workstation: the user's SSH key in the TPM, as an agent
devid-agent keeps each user's SSH key in the machine's TPM and its
certificate from devid-ca current, and serves both to ssh as an agent,
with known_hosts and the host KRL for ssh. It runs as the user: the
package installs the user units devid-agent.socket and
devid-agent.service (systemctl --user enable --now ...).`,
		Programs: map[string]string{"devid-agent": "/usr/bin/devid-agent"},
		Files: []pkgFile{
			{Src: "packaging/user/devid-agent.service", Dst: "/usr/lib/systemd/user/devid-agent.service", Mode: 0o644},
			{Src: "packaging/user/devid-agent.socket", Dst: "/usr/lib/systemd/user/devid-agent.socket", Mode: 0o644},
		},
		Dirs:    []string{"/etc/devid"},
		Depends: map[string][]string{formatDeb: {"openssh-client"}, formatRPM: {"openssh-clients"}},
		// devid tpm reads the EK to register the workstation.
		Suggests: map[string][]string{formatDeb: {"devid"}, formatRPM: {"devid"}},
	},
}
