#!/bin/bash
# host.sh: a host of the compose set: sshd, its files kept by devid-hostd,
# its host key in the machine's (software) TPM, devid-principals deciding
# logins; the account alice to log in to. In the order of the README's
# "Set up a host": devid-hostd writes /etc/ssh/devid first, and only then
# does sshd get the devid snippet.
. /devid/common.sh

ssh-keygen -A >/dev/null
mkdir -p /run/sshd
add_user alice
start_swtpm root
trust_ca
install_token root

cat >/etc/devid/hostd.json <<END
{
  "version": 1,
  "caUrl": "$CA_URL",
  "root": "/etc/devid/root_ca.crt",
  "tpm": "unix:/run/swtpm/sock",
  "reload": {"pidFile": "/run/sshd.pid"},
  "enrolment": {"tokenFile": "/etc/devid/enrolment-token", "name": "$NAME"}
}
END
cat >/etc/devid/principals.conf <<'END'
# account   principals the certificate must all carry
*           login:{account}
END
devid-hostd check >/dev/null
/usr/libexec/devid/devid-principals check --policy /etc/devid/principals.conf
# sshd's log (with the key and the reason of each refusal) goes to the
# container's output.
echo "LogLevel VERBOSE" >/etc/ssh/sshd_config.d/00-compose.conf

/usr/sbin/sshd -D -e &
devid-hostd run --config /etc/devid/hostd.json &

snippet=/etc/ssh/sshd_config.d/devid.conf
if [ ! -f "$snippet" ]; then
	wait_for "devid-hostd's files in /etc/ssh/devid" test -s /etc/ssh/devid/ssh_host_tpm_key-cert.pub -a -s /etc/ssh/devid/user_ca.pub -a -s /etc/ssh/devid/revoked.krl
	wait_for "sshd's pid file" test -s /run/sshd.pid
	src=$(find /usr/share -path '*sshd_config.d/devid.conf' | head -n 1)
	install -m 0644 "$src" "$snippet"
	if ! sshd -t || [ -n "$(sshd -t 2>&1)" ]; then
		log "sshd -t refuses the devid snippet"
		exit 1
	fi
	kill -HUP "$(cat /run/sshd.pid)"
	log "sshd uses devid's files"
fi
devid-hostd status

run_until_one_exits
