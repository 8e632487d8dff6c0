package debimage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/devid-ssh/devid/internal/debimage"
	"github.com/devid-ssh/devid/internal/dockertest"
)

// TestDefaultImages builds (unless the engine has them) devid's two
// images and checks what is in them: the OpenSSH each suite stands for,
// the tools the container tests run, no SSH host keys and no manual pages,
// and the labels naming the inputs. Ensuring an image the engine has
// leaves it as it is.
func TestDefaultImages(t *testing.T) {
	dockertest.Need(t)
	for suite, openssh := range map[string]string{"bookworm": "OpenSSH_9.2", "trixie": "OpenSSH_10.0"} {
		t.Run(suite, func(t *testing.T) {
			t.Parallel()
			ref := dockertest.Image(t, suite)
			id := dockertest.Run(t, "image", "inspect", "--format", "{{.Id}}", ref)
			out := dockertest.Run(t, "run", "--rm", "--network", "none", ref, "sh", "-ec", `
				ssh -V 2>&1
				for tool in sshd ssh-keygen swtpm swtpm_setup swtpm_localca certtool systemctl dbus-daemon ip ss ps pkill update-ca-certificates; do
					command -v $tool >/dev/null || { echo "missing: $tool"; exit 1; }
				done
				test -x /lib/systemd/systemd || test -x /usr/lib/systemd/systemd
				ls /etc/ssh/ssh_host_* 2>/dev/null && { echo "host keys in the image"; exit 1; }
				test -z "$(ls /usr/share/man)" || { echo "manual pages in the image"; exit 1; }
				test ! -s /etc/machine-id || { echo "a machine-id in the image"; exit 1; }
				echo "container=$container"
			`)
			if !strings.HasPrefix(out, openssh) {
				t.Errorf("%s: ssh -V says %q, want %s", ref, out, openssh)
			}
			if !strings.Contains(out, "container=docker") {
				t.Errorf("%s: no ENV container=docker: %s", ref, out)
			}
			labels := dockertest.Run(t, "image", "inspect", "--format", `{{index .Config.Labels "devid.debimage.hash"}} {{index .Config.Labels "devid.debimage.suite"}}`, ref)
			s := debimage.Default(suite)
			if want := s.Hash() + " " + suite; labels != want {
				t.Errorf("%s: labels %q, want %q", ref, labels, want)
			}
			again, err := (&debimage.Builder{}).Ensure(context.Background(), s)
			if err != nil || again != ref {
				t.Fatalf("Ensure again: %q, %v", again, err)
			}
			if id2 := dockertest.Run(t, "image", "inspect", "--format", "{{.Id}}", ref); id2 != id {
				t.Errorf("Ensure of a present image rebuilt it: %s, then %s", id, id2)
			}
		})
	}
}
