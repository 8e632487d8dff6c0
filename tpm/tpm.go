// Package tpm is devid's access to a machine's TPM 2.0: the few tasks the
// rest of devid needs, on top of go-attestation, safe for concurrent use.
//
// # Connecting
//
// On a host, open the kernel's resource-managed device:
//
//	t, err := tpm.Open("/dev/tpmrm0", &tpm.Config{Logger: log})
//
// A software TPM (swtpm) is reached with [Dial] ("unix" socket path or "tcp"
// address of its command port) or, given a connection already made (a
// net.Conn, or one end of a socketpair as an *os.File whose other end swtpm
// serves with --fd), with [New] and [NewChannel]. Package
// [github.com/devid-ssh/devid/tpm/swtpmtest] manufactures and starts a fresh
// swtpm for tests.
//
// A TPM without a resource manager (swtpm, /dev/tpm0) keeps the transient
// objects and sessions a previous client left loaded, and has only a few
// slots for them (libtpms: 3 objects). Connecting to one therefore flushes
// whatever is left over; /dev/tpmrmN needs no such care.
//
// # Identity
//
// A device is named by one of its TPM's endorsement keys (EK):
//
//	ek, err := t.EK()
//	ek.DeviceID    // "urn:ek:sha256:..." (see package deviceid)
//	ek.Certificate // the manufacturer's EK certificate, or nil
//
// That is the RSA-2048 EK wherever the TPM has one (a certificate for it
// at NV 0x01c00002, or the key at 0x81010001), as devid always did; on a
// TPM whose only EKs are ECC ones, the first ECC EK with a certificate
// (ECCEKSlots: P-256 of the TCG's template L-2 at NV 0x01c0000a, then the
// high-range P-256 and P-384 ones); on a TPM with no EK certificate at
// all, the RSA EK of the TCG template. [TPM.EKs] lists them all, that one
// first.
//
// [VerifyEKCertificate] checks an EK certificate against a manufacturer's
// roots, accepting the TCG subject alternative name Go's x509 does not know.
// [TPM.Info] gives the manufacturer, model and firmware version an attestation
// request carries.
//
// # Attestation
//
// Credential activation proves to an attestation CA that an attestation key
// (AK) lives in the same TPM as a registered EK:
//
//	ak, err := t.NewAK()                  // RSA-2048: 0.1–0.5 s on swtpm
//	defer ak.Close()
//	params := ak.AttestationParameters()  // send with the EK to the CA
//	secret, err := ak.ActivateCredential(ek, encryptedCredential) // CA's challenge
//
// The CA side builds the challenge with [MakeCredential](ek.Public,
// params), for an RSA or an ECC EK.
//
// A key certified by the AK proves that a key lives in that TPM (ACME
// device-attest-01, format "tpm"):
//
//	key, err := ak.NewKey(qualifyingData) // ECDSA P-256 in the TPM
//	defer key.Close()
//	key.CertificationParameters()         // verify with the AK's public key
//	sig, err := key.Sign(rand.Reader, digest, crypto.SHA256) // crypto.Signer
//
// # Resident keys
//
// The SSH keys devid certifies live in the TPM for good: made once, kept on
// disk as a TPM-wrapped key file (TSS2 PRIVATE KEY, as ssh-tpm-agent
// writes), loaded at start, certified by each new AK:
//
//	file, err := t.CreateResidentKey("devid-agent") // once; store file
//	rk, err := t.LoadResidentKey(file)              // fails on any other TPM
//	defer rk.Close()
//	cp, err := ak.Certify(rk, qualifyingData)        // TPM2_Certify
//	sig, err := rk.Sign(rand.Reader, digest, crypto.SHA256)
//
// # Concurrency
//
// go-attestation is not safe for concurrent use. A [TPM] and everything
// made from it (AKs, keys and their signers) share one mutex, so any
// number of goroutines may use them at once; each TPM command runs alone.
package tpm

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-attestation/attest"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ErrClosed is returned by the methods of a TPM, AK or Key once the TPM has
// been closed.
var ErrClosed = errors.New("tpm: closed")

// Config says how to use a TPM. The zero value (or a nil *Config) is ready
// to use.
type Config struct {
	// Logger receives the package's messages, such as the leftover handles
	// flushed on connecting. Nil discards them.
	Logger *slog.Logger
}

// TPM is a connection to a TPM 2.0. Its methods are safe for concurrent use.
type TPM struct {
	mu     sync.Mutex
	at     *attest.TPM // nil once closed
	ch     *Channel
	name   string
	logger *slog.Logger
}

// Open opens the TPM character device at path: /dev/tpmrm0 on a Linux host
// (/dev/tpm0 works too, without a resource manager, and for one process at a
// time).
func Open(path string, cfg *Config) (*TPM, error) {
	ch, err := OpenChannel(path)
	if err != nil {
		return nil, err
	}
	return New(ch, cfg)
}

// Dial connects to a software TPM's command port; see [DialChannel].
func Dial(network, address string, cfg *Config) (*TPM, error) {
	ch, err := DialChannel(network, address)
	if err != nil {
		return nil, err
	}
	return New(ch, cfg)
}

// New uses the TPM behind ch, flushing the transient objects and sessions a
// previous client left unless ch is a resource-managed device (/dev/tpmrmN).
// The TPM owns ch; on error, New closes it.
func New(ch *Channel, cfg *Config) (*TPM, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &TPM{ch: ch, name: ch.name, logger: logger.With("tpm", ch.name)}
	if !resourceManaged(ch) {
		if err := t.flushLeftovers(); err != nil {
			ch.Close()
			return nil, err
		}
	}
	at, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: ch})
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("tpm: %s: open: %w", t.name, err)
	}
	t.at = at
	return t, nil
}

// resourceManaged reports whether ch is a device behind the kernel's
// resource manager, which gives each open file its own empty set of
// transient objects and sessions.
func resourceManaged(ch *Channel) bool {
	return ch.device && strings.HasPrefix(filepath.Base(ch.name), "tpmrm")
}

// Handle ranges TPM2_GetCapability(TPM_CAP_HANDLES) lists and
// TPM2_FlushContext takes: transient objects, then loaded (HMAC and policy)
// sessions.
var leftoverRanges = []uint32{
	uint32(tpm2.TPMHTTransient) << 24,
	uint32(tpm2.TPMHTHMACSession) << 24,
}

// flushLeftovers flushes every transient object and loaded session in the
// TPM. It runs before go-attestation holds any handle.
func (t *TPM) flushLeftovers() error {
	for _, first := range leftoverRanges {
		handles, err := listHandles(t.ch, first)
		if err != nil {
			return fmt.Errorf("tpm: %s: listing leftover handles: %w", t.name, err)
		}
		for _, h := range handles {
			if _, err := (tpm2.FlushContext{FlushHandle: tpm2.TPMHandle(h)}).Execute(t.ch); err != nil {
				return fmt.Errorf("tpm: %s: flushing leftover handle %#08x: %w", t.name, h, err)
			}
			t.logger.Info("tpm: flushed leftover handle", "handle", fmt.Sprintf("%#08x", h))
		}
	}
	return nil
}

// listHandles returns the handles of the type of first, from first on.
func listHandles(tr transport.TPM, first uint32) ([]uint32, error) {
	var handles []uint32
	for {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      first,
			PropertyCount: 64,
		}.Execute(tr)
		if err != nil {
			return nil, err
		}
		hl, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return nil, err
		}
		for _, h := range hl.Handle {
			handles = append(handles, uint32(h))
		}
		if !rsp.MoreData || len(hl.Handle) == 0 {
			return handles, nil
		}
		// Loaded policy sessions may be listed with their own type
		// (0x03), so continue within the type asked for.
		next := (uint32(hl.Handle[len(hl.Handle)-1]) + 1) & 0x00ffffff
		if next == 0 {
			return handles, nil
		}
		first = first&0xff000000 | next
	}
}

// call runs f with the TPM to itself and returns its result, its error
// saying what failed; or returns ErrClosed.
func call[T any](t *TPM, what string, f func(at *attest.TPM) (T, error)) (T, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var zero T
	if t.at == nil {
		return zero, ErrClosed
	}
	v, err := f(t.at)
	if err != nil {
		return zero, fmt.Errorf("tpm: %s: %s: %w", t.name, what, err)
	}
	return v, nil
}

// Close closes the connection to the TPM. AKs and keys are not flushed: on a
// TPM without a resource manager the next connection flushes them.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.at == nil {
		return ErrClosed
	}
	err := t.at.Close()
	t.at = nil
	return err
}

// Info describes a TPM as an attestation request reports it (the
// TPM_PT_MANUFACTURER, TPM_PT_VENDOR_STRING_1..4 and TPM_PT_FIRMWARE_VERSION_1
// properties, as go-attestation reads them).
type Info struct {
	// Manufacturer is the TCG vendor ID: four ASCII bytes such as "IBM\0"
	// (0x49424D00, swtpm's).
	Manufacturer uint32
	// Model is the vendor string, such as "SW   TPM" (swtpm's).
	Model string
	// FirmwareMajor and FirmwareMinor are the two halves of the firmware
	// version.
	FirmwareMajor, FirmwareMinor int
}

// FirmwareVersion returns "major.minor".
func (i Info) FirmwareVersion() string {
	return fmt.Sprintf("%d.%d", i.FirmwareMajor, i.FirmwareMinor)
}

// Info reads the TPM's manufacturer, model and firmware version.
func (t *TPM) Info() (Info, error) {
	return call(t, "reading TPM info", func(at *attest.TPM) (Info, error) {
		ai, err := at.Info()
		if err != nil {
			return Info{}, err
		}
		return Info{
			Manufacturer:  uint32(ai.Manufacturer),
			Model:         ai.VendorInfo,
			FirmwareMajor: ai.FirmwareVersionMajor,
			FirmwareMinor: ai.FirmwareVersionMinor,
		}, nil
	})
}

// Channel is what go-attestation and go-tpm take.
var (
	_ attest.CommandChannelTPM20 = (*Channel)(nil)
	_ transport.TPM              = (*Channel)(nil)
)

// OpenAddress opens a TPM named the way devid's configuration and flags
// name one: a device path (/dev/tpmrm0), "unix:PATH" for a software TPM's
// unix socket, or "tcp:HOST:PORT" for its command port.
func OpenAddress(addr string, cfg *Config) (*TPM, error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		return Dial("unix", strings.TrimPrefix(addr, "unix:"), cfg)
	case strings.HasPrefix(addr, "tcp:"):
		return Dial("tcp", strings.TrimPrefix(addr, "tcp:"), cfg)
	}
	return Open(addr, cfg)
}
