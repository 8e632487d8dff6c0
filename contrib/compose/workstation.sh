#!/bin/bash
# workstation.sh: alice's workstation: devid-agent runs as alice, with her
# key in the machine's (software) TPM, and ssh uses it:
#   docker-compose exec -u alice workstation ssh host-1
. /devid/common.sh

add_user alice
chown alice:alice /home/alice # a new volume is root's
start_swtpm alice
trust_ca
install_token alice

cat >/etc/devid/agent.json <<END
{
  "version": 1,
  "caUrl": "$CA_URL",
  "root": "/etc/devid/root_ca.crt",
  "tpm": "unix:/run/swtpm/sock",
  "socket": "/run/devid-agent/agent.sock",
  "enrolment": {"tokenFile": "/etc/devid/enrolment-token", "name": "$NAME"}
}
END
install -d -m 0700 -o alice -g alice /run/devid-agent
install -d -m 0700 -o alice -g alice /home/alice/.ssh
# IdentityAgent, UserKnownHostsFile (the CA's host CA keys) and
# RevokedHostKeys (the CA's KRL), as devid-agent says.
{
	echo "# devid-agent ssh-config"
	runuser -u alice -- devid-agent ssh-config --config /etc/devid/agent.json
	echo "    BatchMode yes"
} >/home/alice/.ssh/config
chown alice:alice /home/alice/.ssh/config

runuser -u alice -- devid-agent run --config /etc/devid/agent.json &

run_until_one_exits
