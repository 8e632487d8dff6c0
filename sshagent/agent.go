// Package sshagent serves keys that never leave their device — a TPM's, in
// devid — to OpenSSH through the ssh-agent protocol (draft-miller-ssh-agent,
// OpenSSH's PROTOCOL.agent), the one way ssh, git and sshd accept a key they
// cannot read.
//
// Both devid daemons use it: devid-agent serves the user's TPM key and its
// certificate to ssh and git (SSH_AUTH_SOCK, IdentityAgent), and
// devid-hostd serves the host's TPM key to sshd (HostKeyAgent). The key is
// a [crypto.Signer]; the package knows nothing of TPMs.
//
// # What the agent answers
//
//   - List: for each identity of the [Source], its certificate (if it has
//     one, and it certifies the identity's key) and then its plain public
//     key, in that order: ssh tries the certificate first.
//   - Sign: with the identity whose public key or certificate is the key
//     asked for, through [ssh.NewSignerFromSigner]. ECDSA and Ed25519 keys
//     sign with their one algorithm (RSA flags are ignored for them, as
//     OpenSSH's ssh-agent does); RSA keys sign with rsa-sha2-256 or
//     rsa-sha2-512 as the flags ask, and a request for an ssh-rsa (SHA-1)
//     signature is refused. Signatures are made one at a time: a TPM runs
//     one command at a time, and the Signer need not be safe for
//     concurrent use.
//   - Add, Remove, RemoveAll, Lock, Unlock and extensions (such as
//     OpenSSH's session-bind@openssh.com, which ssh asks for at every
//     connection and goes on without) are refused: the keys live in the
//     device and are the daemon's to choose. The protocol carries no error
//     text, so `ssh-add` only says "agent refused operation" (or "Failed to
//     remove all identities.", "Failed to lock agent."); the agent logs
//     what it refused and why.
//
// The agent reads the Source at every request, so a daemon that renews its
// certificate swaps it in the Source and the next List shows it, with no
// restart.
//
// # Serving
//
// [Agent.Serve] accepts connections on a listener, from [Listen] (a socket
// path the daemon creates) or [ActivatedListener] (the socket systemd
// passed, which keeps connections queued while the daemon restarts). Every
// connection's peer is checked (SO_PEERCRED): only the allowed user IDs are
// served, by default the daemon's own; others are logged and closed.
package sshagent

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Identity is one key the agent serves.
type Identity struct {
	// Signer is the key; its Sign runs wherever the key lives.
	Signer crypto.Signer
	// Certificate certifies Signer's public key; nil for none.
	Certificate *ssh.Certificate
	// Comment is what `ssh-add -l` shows beside the key.
	Comment string
}

// Source gives the identities to serve. The agent calls Identities at every
// request (it must be safe for concurrent use), so a certificate renewed
// in the Source is served from the next request on.
type Source interface {
	Identities() []Identity
}

// Static is a Source of a fixed list of identities.
type Static []Identity

// Identities returns s.
func (s Static) Identities() []Identity { return s }

// ErrNotSupported is what the agent answers (and logs) for every request
// that would change or lock its keys.
var ErrNotSupported = errors.New("sshagent: keys live in the TPM")

// Options configure an Agent.
type Options struct {
	// AllowUIDs are the user IDs whose connections are served; nil means
	// the process's own user ID only. devid-hostd allows root (sshd).
	AllowUIDs []int
	// Logger gets a line for every refused peer, refused request and
	// failed signature; nil discards them.
	Logger *slog.Logger
}

// Stats count what an agent has done since it was made.
type Stats struct {
	Connections  uint64 // connections served (peer allowed)
	PeersRefused uint64 // connections closed: peer not allowed or unknown
	Signatures   uint64 // signatures made
	SignErrors   uint64 // sign requests failed: unknown key, refused algorithm, signer error
	Refused      uint64 // requests refused: add, remove, lock, unlock (not extensions)
}

// Agent answers the ssh-agent protocol from a Source. It implements
// agent.ExtendedAgent.
type Agent struct {
	source Source
	allow  []int
	log    *slog.Logger

	signMu sync.Mutex // one signature at a time

	connections, peersRefused, signatures, signErrors, refused atomic.Uint64
}

var _ agent.ExtendedAgent = (*Agent)(nil)

// New returns an agent serving source's identities.
func New(source Source, o Options) *Agent {
	a := &Agent{source: source, allow: o.AllowUIDs, log: o.Logger}
	if a.allow == nil {
		a.allow = []int{os.Getuid()}
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a
}

// Stats returns the agent's counts.
func (a *Agent) Stats() Stats {
	return Stats{
		Connections:  a.connections.Load(),
		PeersRefused: a.peersRefused.Load(),
		Signatures:   a.signatures.Load(),
		SignErrors:   a.signErrors.Load(),
		Refused:      a.refused.Load(),
	}
}

// List returns each identity's certificate (if any) and public key.
func (a *Agent) List() ([]*agent.Key, error) {
	var keys []*agent.Key
	for i, id := range a.source.Identities() {
		pub, err := publicKey(id)
		if err != nil {
			a.log.Error("sshagent: identity not listed", "identity", i, "comment", id.Comment, "err", err)
			continue
		}
		if c := id.Certificate; c != nil {
			if bytes.Equal(c.Key.Marshal(), pub.Marshal()) {
				keys = append(keys, &agent.Key{Format: c.Type(), Blob: c.Marshal(), Comment: id.Comment})
			} else {
				a.log.Error("sshagent: certificate not listed: it certifies another key", "identity", i, "comment", id.Comment,
					"certificate_key", ssh.FingerprintSHA256(c.Key), "key", ssh.FingerprintSHA256(pub))
			}
		}
		keys = append(keys, &agent.Key{Format: pub.Type(), Blob: pub.Marshal(), Comment: id.Comment})
	}
	return keys, nil
}

// publicKey is id's public key in SSH form.
func publicKey(id Identity) (ssh.PublicKey, error) {
	if id.Signer == nil {
		return nil, errors.New("sshagent: identity has no signer")
	}
	pub, err := ssh.NewPublicKey(id.Signer.Public())
	if err != nil {
		return nil, fmt.Errorf("sshagent: identity's key: %w", err)
	}
	return pub, nil
}

// Sign signs data with the identity whose key or certificate is key.
func (a *Agent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return a.SignWithFlags(key, data, 0)
}

// SignWithFlags signs data with the identity whose key or certificate is
// key, with the algorithm flags ask for (RSA keys only).
func (a *Agent) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	sig, err := a.sign(key, data, flags)
	if err != nil {
		a.signErrors.Add(1)
		a.log.Warn("sshagent: sign request failed", "key", ssh.FingerprintSHA256(key), "type", key.Type(), "err", err)
		return nil, err
	}
	a.signatures.Add(1)
	return sig, nil
}

func (a *Agent) sign(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	want := key.Marshal()
	for _, id := range a.source.Identities() {
		pub, err := publicKey(id)
		if err != nil {
			continue
		}
		if !bytes.Equal(pub.Marshal(), want) && (id.Certificate == nil || !bytes.Equal(id.Certificate.Marshal(), want)) {
			continue
		}
		alg, err := algorithm(pub.Type(), flags)
		if err != nil {
			return nil, err
		}
		s, err := ssh.NewSignerFromSigner(id.Signer)
		if err != nil {
			return nil, fmt.Errorf("sshagent: %w", err)
		}
		as, ok := s.(ssh.AlgorithmSigner)
		if !ok {
			return nil, fmt.Errorf("sshagent: %s signer cannot choose its algorithm", pub.Type())
		}
		a.signMu.Lock()
		defer a.signMu.Unlock()
		sig, err := as.SignWithAlgorithm(rand.Reader, data, alg)
		if err != nil {
			return nil, fmt.Errorf("sshagent: signing with %s %s: %w", pub.Type(), ssh.FingerprintSHA256(pub), err)
		}
		return sig, nil
	}
	return nil, fmt.Errorf("sshagent: no identity holds key %s %s", key.Type(), ssh.FingerprintSHA256(key))
}

// algorithm is the signature algorithm for a key of type keyType when the
// request carries flags: for RSA, SHA-2 as asked (SHA-1 refused); for any
// other key, its one algorithm, whatever the flags (as OpenSSH does).
func algorithm(keyType string, flags agent.SignatureFlags) (string, error) {
	if keyType != ssh.KeyAlgoRSA {
		return keyType, nil
	}
	switch {
	case flags&agent.SignatureFlagRsaSha512 != 0:
		return ssh.KeyAlgoRSASHA512, nil
	case flags&agent.SignatureFlagRsaSha256 != 0:
		return ssh.KeyAlgoRSASHA256, nil
	}
	return "", errors.New("sshagent: refusing an ssh-rsa (SHA-1) signature: ask for rsa-sha2-256 or rsa-sha2-512")
}

// Signers returns a signer for each identity's key (and certificate).
// The protocol never asks for them; they are for a caller in-process.
func (a *Agent) Signers() ([]ssh.Signer, error) {
	var out []ssh.Signer
	for _, id := range a.source.Identities() {
		s, err := ssh.NewSignerFromSigner(id.Signer)
		if err != nil {
			return nil, fmt.Errorf("sshagent: %w", err)
		}
		if id.Certificate != nil {
			cs, err := ssh.NewCertSigner(id.Certificate, s)
			if err != nil {
				return nil, fmt.Errorf("sshagent: %w", err)
			}
			out = append(out, cs)
		}
		out = append(out, s)
	}
	return out, nil
}

// refuse counts and logs a refused request, and returns its error.
func (a *Agent) refuse(what string) error {
	a.refused.Add(1)
	err := fmt.Errorf("%w: %s is not supported", ErrNotSupported, what)
	a.log.Warn("sshagent: request refused", "request", what, "err", err)
	return err
}

// Add is refused.
func (a *Agent) Add(key agent.AddedKey) error { return a.refuse("adding a key") }

// Remove is refused.
func (a *Agent) Remove(key ssh.PublicKey) error { return a.refuse("removing a key") }

// RemoveAll is refused.
func (a *Agent) RemoveAll() error { return a.refuse("removing all keys") }

// Lock is refused.
func (a *Agent) Lock(passphrase []byte) error { return a.refuse("locking the agent") }

// Unlock is refused.
func (a *Agent) Unlock(passphrase []byte) error { return a.refuse("unlocking the agent") }

// Extension is refused: it returns agent.ErrExtensionUnsupported itself,
// as the protocol asks. ssh asks for session-bind@openssh.com at every
// connection and goes on without it, so the refusal is logged at debug
// level and not counted.
func (a *Agent) Extension(extensionType string, contents []byte) ([]byte, error) {
	a.log.Debug("sshagent: extension refused", "extension", extensionType)
	return nil, agent.ErrExtensionUnsupported
}
