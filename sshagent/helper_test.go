package sshagent_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devid-ssh/devid/sshagent"
)

// The helper process: the test binary run again as a small agent daemon,
// for tests that kill -9 it and start it again. It serves the key in the
// PEM file helperKeyEnv names, on the socket systemd's way passed it
// (LISTEN_FDS=1, LISTEN_PID, fd 3) or else on sshagent.Listen(helperSocketEnv),
// and says "serving" on standard output once it listens.
const (
	helperEnv       = "SSHAGENT_TEST_HELPER"
	helperKeyEnv    = "SSHAGENT_TEST_KEY"
	helperSocketEnv = "SSHAGENT_TEST_SOCKET"
)

func helperMain() int {
	if err := helper(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

func helper() error {
	b, err := os.ReadFile(os.Getenv(helperKeyEnv))
	if err != nil {
		return err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return fmt.Errorf("%s: no PEM", os.Getenv(helperKeyEnv))
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	ln, err := sshagent.ActivatedListener()
	if err != nil {
		return err
	}
	if ln == nil {
		if ln, err = sshagent.Listen(os.Getenv(helperSocketEnv)); err != nil {
			return err
		}
	}
	fmt.Println("serving")
	a := sshagent.New(sshagent.Static{{Signer: key.(crypto.Signer), Comment: "helper"}}, sshagent.Options{})
	return a.Serve(context.Background(), ln)
}

// writeKey writes key as PKCS #8 PEM for the helper.
func writeKey(t testing.TB, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// helperProc is a running helper.
type helperProc struct {
	cmd    *exec.Cmd
	stderr *logBuffer
	done   chan struct{}
}

// startHelper starts the helper serving keyFile: on the listening socket
// ln (a file of the caller's, passed as systemd passes it), or, if ln is
// nil, on socket; and waits until it says it serves. It is killed when the
// test ends.
func startHelper(t testing.TB, keyFile string, ln *os.File, socket string) *helperProc {
	t.Helper()
	// systemd sets LISTEN_PID to the pid of the process it executes; a
	// shell that executes the binary in its own place knows it ($$).
	cmd := exec.Command("/bin/sh", "-c", `export LISTEN_PID=$$; exec "$0" "$@"`, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperKeyEnv+"="+keyFile, helperSocketEnv+"="+socket)
	if ln != nil {
		cmd.Env = append(cmd.Env, "LISTEN_FDS=1")
		cmd.ExtraFiles = []*os.File{ln} // fd 3
	} else {
		cmd.Env = append(cmd.Env, "LISTEN_FDS=")
	}
	p := &helperProc{cmd: cmd, stderr: &logBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		if strings.TrimSpace(l) != "serving" {
			p.kill()
			t.Fatalf("helper said %q, not serving; stderr:\n%s", l, p.stderr)
		}
	case <-time.After(time.Minute): // bounds a hang only
		p.kill()
		t.Fatalf("helper did not serve within a minute; stderr:\n%s", p.stderr)
	}
	return p
}

// kill kills the helper (SIGKILL) and waits for it to exit.
func (p *helperProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}
