package sshagent_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/binary"
	"io"
	"testing"

	"github.com/devid-ssh/devid/sshagent"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// frame is an agent request on the wire: length, type, body.
func frame(typ byte, body ...[]byte) []byte {
	msg := append([]byte{typ}, bytes.Join(body, nil)...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

// str is an SSH string.
func str(b []byte) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...) }

// FuzzServeAgent feeds arbitrary requests, as a peer would send them, to
// the agent through x/crypto's protocol server: whatever the key blobs,
// flags and lengths, the agent answers or refuses, and never panics or
// signs for a key it does not hold.
func FuzzServeAgent(f *testing.F) {
	// A fixed key: the corpus's sign requests name it.
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), bytes.Repeat([]byte{7}, 32))
	if err != nil {
		f.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		f.Fatal(err)
	}
	ca, err := ssh.NewSignerFromSigner(key)
	if err != nil {
		f.Fatal(err)
	}
	cert := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, ValidPrincipals: []string{"root"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(bytes.NewReader(bytes.Repeat([]byte{1}, 1024)), ca); err != nil {
		f.Fatal(err)
	}
	otherKey, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), bytes.Repeat([]byte{9}, 32))
	if err != nil {
		f.Fatal(err)
	}
	other, _ := ssh.NewPublicKey(otherKey.Public())
	flags := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

	f.Add(frame(11))                                                         // list
	f.Add(frame(13, str(pub.Marshal()), str([]byte("data")), flags(0)))      // sign, key
	f.Add(frame(13, str(cert.Marshal()), str([]byte("data")), flags(2)))     // sign, certificate, SHA-256 flag
	f.Add(frame(13, str(other.Marshal()), str([]byte("data")), flags(4)))    // sign, unknown key
	f.Add(frame(13, str([]byte("garbage")), str(nil), flags(0xffffffff)))    // sign, bad blob
	f.Add(frame(17, str([]byte(ssh.KeyAlgoED25519)), str(make([]byte, 32)))) // add
	f.Add(frame(18, str(pub.Marshal())))                                     // remove
	f.Add(frame(19))                                                         // remove all
	f.Add(frame(22, str([]byte("pass"))))                                    // lock
	f.Add(frame(27, str([]byte("session-bind@openssh.com")), []byte{1, 2}))  // extension
	f.Add(append(frame(11), frame(13, str(pub.Marshal()), str(nil), flags(0))...))

	point, err := key.PublicKey.Bytes() // in the key's blob and the certificate's
	if err != nil {
		f.Fatal(err)
	}
	a := sshagent.New(sshagent.Static{{Signer: key, Certificate: cert}}, sshagent.Options{})
	f.Fuzz(func(t *testing.T, in []byte) {
		before := a.Stats().Signatures
		agent.ServeAgent(a, struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(in), io.Discard})
		// Every signature made was asked for by a request naming our key
		// or its certificate.
		if n := a.Stats().Signatures - before; n > 0 && !bytes.Contains(in, point) {
			t.Errorf("%d signature(s) for requests not naming the key", n)
		}
	})
}
