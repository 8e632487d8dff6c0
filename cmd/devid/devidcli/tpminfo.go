package devidcli

import (
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/devid-ssh/devid/internal/command"
	"github.com/devid-ssh/devid/tpm"
)

func tpmCmds() []*command.Command {
	return []*command.Command{tpmInfoCmd()}
}

// tpmInfo is what `devid tpm info --json` prints.
type tpmInfo struct {
	TPM            string   `json:"tpm"`
	Manufacturer   string   `json:"manufacturer"`
	ManufacturerID string   `json:"manufacturerId"`
	Model          string   `json:"model"`
	Firmware       string   `json:"firmware"`
	DeviceID       string   `json:"deviceId"`
	EKs            []ekInfo `json:"eks"`
	Register       string   `json:"register"` // the devid device add line
	EKFile         string   `json:"ekFile,omitempty"`
}

type ekInfo struct {
	Type        string      `json:"type"` // RSA-2048, ECC-P-256, ECC-P-384
	DeviceID    string      `json:"deviceId"`
	Public      string      `json:"public"`           // PEM
	Handle      string      `json:"handle,omitempty"` // persistent handle (0x81010001); none: made from its TCG template when needed
	Certificate *ekCertInfo `json:"certificate,omitempty"`
	Used        bool        `json:"used"` // the EK that names the device
}

type ekCertInfo struct {
	NVIndex   string    `json:"nvIndex"` // where the TPM holds it (0x01c00002)
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	PEM       string    `json:"pem"`
}

func tpmInfoCmd() *command.Command {
	var tpmAddr, name, kind, ekOut string
	var asJSON, ekPEM bool
	return &command.Command{
		Name: "info",
		Summary: "on the machine itself: read its TPM (manufacturer, model, firmware, endorsement keys and their certificates), " +
			"its device ID, and the `devid device add` line that registers it",
		Usage: "[--tpm /dev/tpmrm0|unix:PATH|tcp:HOST:PORT] [--name NAME] [--kind host|workstation] [--ek-out FILE] [--ek-pem] [--json]",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&tpmAddr, "tpm", "/dev/tpmrm0", "the TPM: a device, unix:PATH or tcp:HOST:PORT (a swtpm)")
			fs.StringVar(&name, "name", "", "the device's name in the registration line (default: this machine's host name)")
			fs.StringVar(&kind, "kind", "host", "the device's kind in the registration line: host or workstation")
			fs.StringVar(&ekOut, "ek-out", "", "write the EK (its certificate, else its public key) as PEM to this `file`, for devid device add --ek")
			fs.BoolVar(&ekPEM, "ek-pem", false, "print only the EK as PEM (its certificate, else its public key), for a pipe or a file")
			fs.BoolVar(&asJSON, "json", false, "print as JSON")
		},
		Run: func(env *command.Env, args []string) error {
			if err := command.Args(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			if kind != "host" && kind != "workstation" {
				return command.Usagef("--kind %q: want host or workstation", kind)
			}
			if name == "" {
				h, err := os.Hostname()
				if err != nil {
					return err
				}
				name = h
			}
			t, err := tpm.OpenAddress(tpmAddr, nil)
			if err != nil {
				return err
			}
			defer t.Close()
			info, err := t.Info()
			if err != nil {
				return err
			}
			eks, err := t.EKs()
			if err != nil {
				return err
			}
			ekBlock, err := ekPEMBlock(eks[0])
			if err != nil {
				return err
			}
			if ekPEM {
				_, err := env.Stdout.Write(pem.EncodeToMemory(ekBlock))
				return err
			}
			if ekOut != "" {
				if err := os.WriteFile(ekOut, pem.EncodeToMemory(ekBlock), 0o644); err != nil {
					return err
				}
			}
			file := ekOut
			if file == "" {
				file = "ek.pem"
			}
			rep := tpmInfo{TPM: tpmAddr, Manufacturer: vendorName(info.Manufacturer),
				ManufacturerID: fmt.Sprintf("0x%08x", info.Manufacturer), Model: strings.TrimSpace(info.Model),
				Firmware: info.FirmwareVersion(), DeviceID: eks[0].DeviceID, EKFile: ekOut,
				Register: fmt.Sprintf("devid device add --ek %s --name %s --kind %s", quoteArg(file), quoteArg(name), kind)}
			for i, ek := range eks {
				ei, err := describeEK(ek)
				if err != nil {
					return err
				}
				ei.Used = i == 0
				rep.EKs = append(rep.EKs, ei)
			}
			if asJSON {
				return writeJSON(env, rep)
			}
			printTPMInfo(env, rep)
			return nil
		},
	}
}

func printTPMInfo(env *command.Env, r tpmInfo) {
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "TPM\t%s\n", r.TPM)
	fmt.Fprintf(tw, "manufacturer\t%s (%s)\n", r.Manufacturer, r.ManufacturerID)
	fmt.Fprintf(tw, "model\t%s\n", r.Model)
	fmt.Fprintf(tw, "firmware\t%s\n", r.Firmware)
	fmt.Fprintf(tw, "device ID\t%s\n", r.DeviceID)
	for _, ek := range r.EKs {
		use := ""
		if ek.Used {
			use = " (names the device)"
		}
		fmt.Fprintf(tw, "EK %s%s\t%s\n", ek.Type, use, ek.DeviceID)
		if ek.Handle != "" {
			fmt.Fprintf(tw, "  key\tat persistent handle %s\n", ek.Handle)
		} else {
			fmt.Fprintf(tw, "  key\tat no persistent handle: made from its TCG template when needed\n")
		}
		if c := ek.Certificate; c != nil {
			fmt.Fprintf(tw, "  certificate\tNV %s: issuer %q, serial %s, valid until %s\n", c.NVIndex, c.Issuer, c.Serial, c.NotAfter.Format(time.RFC3339))
		} else {
			fmt.Fprintf(tw, "  certificate\tnone in the TPM\n")
		}
	}
	tw.Flush()
	fmt.Fprintln(env.Stdout)
	if r.EKFile == "" {
		fmt.Fprintln(env.Stdout, "Register it (write the EK with --ek-out ek.pem, or --ek-pem > ek.pem; as an operator):")
	} else {
		fmt.Fprintf(env.Stdout, "Wrote the EK to %s. Register it (as an operator):\n", r.EKFile)
	}
	fmt.Fprintf(env.Stdout, "  %s\n", r.Register)
}

// ekPEMBlock is what devid device add --ek takes: the EK certificate, or
// the public key when the TPM holds no certificate.
func ekPEMBlock(ek *tpm.EK) (*pem.Block, error) {
	if ek.Certificate != nil {
		return &pem.Block{Type: "CERTIFICATE", Bytes: ek.Certificate.Raw}, nil
	}
	der, err := x509.MarshalPKIXPublicKey(ek.Public)
	if err != nil {
		return nil, err
	}
	return &pem.Block{Type: "PUBLIC KEY", Bytes: der}, nil
}

func describeEK(ek *tpm.EK) (ekInfo, error) {
	der, err := x509.MarshalPKIXPublicKey(ek.Public)
	if err != nil {
		return ekInfo{}, err
	}
	ei := ekInfo{Type: ek.Type(), DeviceID: ek.DeviceID, Public: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
	if ek.Handle != 0 {
		ei.Handle = fmt.Sprintf("0x%08x", ek.Handle)
	}
	if c := ek.Certificate; c != nil {
		ei.Certificate = &ekCertInfo{NVIndex: fmt.Sprintf("0x%08x", ek.CertIndex), Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: c.SerialNumber.String(),
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))}
	}
	return ei, nil
}

// vendorName is the TCG vendor ID's four ASCII bytes, as printable text.
func vendorName(id uint32) string {
	b := []byte{byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
	var sb strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			sb.WriteByte(c)
		}
	}
	return strings.TrimSpace(sb.String())
}

// quoteArg quotes a shell argument if it needs it.
func quoteArg(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`;&|<>()*?[]#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
