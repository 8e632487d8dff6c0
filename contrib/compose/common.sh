# common.sh: what the compose set's entrypoints share (sourced by ca.sh,
# host.sh, workstation.sh).
set -euo pipefail

CA_URL=${DEVID_CA_URL:-https://ca:8443}
ENROL=/shared # the CA's fingerprint and the enrolment tokens (a volume)
NAME=$(hostname)

log() { echo "devid-compose[$NAME]: $*" >&2; }

# wait_for WHAT COMMAND...: run COMMAND every half second until it succeeds;
# give up after DEVID_WAIT seconds (default 600).
wait_for() {
	local what=$1 i=0
	shift
	until "$@" >/dev/null 2>&1; do
		if [ $((i += 1)) -gt $((${DEVID_WAIT:-600} * 2)) ]; then
			log "gave up waiting for $what"
			exit 1
		fi
		[ $((i % 20)) -ne 10 ] || log "waiting for $what"
		sleep 0.5
	done
}

# start_swtpm USER: this machine's TPM, a software TPM (swtpm) standing in
# for /dev/tpmrm0. It is manufactured once, with an EK certificate from
# swtpm-localca (as a TPM vendor would), in /var/lib/devid-swtpm (a volume:
# the machine keeps its TPM, hence its device ID, across re-creations), and
# served on /run/swtpm/sock, which only USER may use.
start_swtpm() {
	local user=$1 state=/var/lib/devid-swtpm
	if [ ! -f "$state/tpm2-00.permall" ]; then
		log "manufacturing the TPM (swtpm_setup --create-ek-cert)"
		mkdir -p "$state"
		swtpm_setup --tpm2 --tpmstate "$state" --create-ek-cert --overwrite >/var/log/swtpm_setup.log 2>&1 ||
			{ cat /var/log/swtpm_setup.log >&2; exit 1; }
	fi
	mkdir -p /run/swtpm
	rm -f /run/swtpm/sock
	swtpm socket --tpm2 --tpmstate dir="$state" --flags not-need-init,startup-clear \
		--server "type=unixio,path=/run/swtpm/sock,mode=0600,uid=$(id -u "$user"),gid=$(id -g "$user")" \
		--log file=/var/log/swtpm.log &
	wait_for "swtpm's socket" test -S /run/swtpm/sock
}

# trust_ca: fetch the CA's root by the fingerprint the CA published (the
# one an operator would hand out) into /etc/devid/root_ca.crt, with devid
# bootstrap, which refuses any other root.
trust_ca() {
	wait_for "the CA's fingerprint in $ENROL" test -s "$ENROL/root-fingerprint"
	local fp pin
	fp=$(cat "$ENROL/root-fingerprint")
	pin=$(mktemp -d)
	wait_for "the CA at $CA_URL" env DEVID_CONFIG="$pin/config.json" devid bootstrap --force --ca-url "$CA_URL" --fingerprint "$fp"
	install -d -m 0755 /etc/devid
	install -m 0644 "$pin/root_ca.crt" /etc/devid/root_ca.crt
	rm -r "$pin"
	log "trusting the CA at $CA_URL, root fingerprint $fp"
}

# install_token USER: this machine's one-time enrolment token, mode 0600,
# USER's: the CA made one per machine in $ENROL/tokens/NAME.token. Kept
# after the binding (the same TPM presenting it again is that device).
install_token() {
	local user=$1
	[ -f /etc/devid/enrolment-token ] && return
	wait_for "an enrolment token in $ENROL/tokens/$NAME.token" test -s "$ENROL/tokens/$NAME.token"
	install -m 0600 -o "$user" -g "$user" "$ENROL/tokens/$NAME.token" /etc/devid/enrolment-token
}

# add_user LOGIN: a local account, with a home.
add_user() {
	id -u "$1" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$1"
}

# run_until_one_exits: wait for the background daemons; when one exits,
# stop the others and exit with its status (the container's restart policy
# starts it again). SIGTERM (docker stop) stops them all.
run_until_one_exits() {
	trap 'log "stopping"; kill -TERM $(jobs -p) 2>/dev/null; wait; exit 0' TERM INT
	local status=0
	wait -n || status=$?
	log "a daemon exited (status $status): stopping the others"
	kill -TERM $(jobs -p) 2>/dev/null || true
	wait || true
	exit "$status"
}
