#!/bin/bash
# ca.sh: the compose set's CA. The first time (an empty /var/lib/devid-ca
# volume): devid-ca init, with the certificate lifetimes from the
# environment; then serve, pin the CA as its admin (devid bootstrap), import
# the users, register the machines as pending by serial number, and give
# each a one-time enrolment token, which the machines find in the enrol
# volume with the root's fingerprint.
. /devid/common.sh

dir=/var/lib/devid-ca
export DEVID_CONFIG=/root/.config/devid/config.json

if [ ! -f "$dir/devid-ca.json" ]; then
	devid-ca init --dir "$dir" --dns ca,localhost,127.0.0.1 --address :8443
	jq --arg host "${DEVID_LIFETIME_HOST:-24h}" --arg user "${DEVID_LIFETIME_USER:-16h}" --arg device "${DEVID_LIFETIME_DEVICE:-24h}" \
		'.lifetimes = {host: $host, user: $user, device: $device}' "$dir/devid-ca.json" >"$dir/devid-ca.json.new"
	mv "$dir/devid-ca.json.new" "$dir/devid-ca.json"
fi

devid-ca serve --config "$dir/devid-ca.json" &

fp=$(openssl x509 -in "$dir/certs/root_ca.crt" -outform DER | sha256sum | cut -d ' ' -f 1)
wait_for "devid-ca to answer" devid bootstrap --force --ca-url https://localhost:8443 --fingerprint "$fp" \
	--admin-cert "$dir/admin/admin.crt" --admin-key "$dir/admin/admin.key"

if [ ! -f "$dir/compose-setup-done" ]; then
	log "importing the users, registering the machines, making their enrolment tokens"
	printf 'email,login,groups\nalice@example.com,alice,sre\n' >/tmp/users.csv
	devid user import /tmp/users.csv
	for host in ${DEVID_HOSTS:-host-1 host-2}; do
		devid device add --serial "SERIAL-$host" --name "$host" --kind host --collection hosts
	done
	devid device add --serial SERIAL-workstation --name workstation --kind workstation \
		--collection laptops --owner alice@example.com
	install -d -m 0755 "$ENROL/tokens"
	for device in ${DEVID_HOSTS:-host-1 host-2} workstation; do
		devid device token "$device" --ttl 720h --out "$ENROL/tokens/$device.token"
	done
	touch "$dir/compose-setup-done"
fi
# Published last: the machines start once it is there.
echo "$fp" >"$ENROL/root-fingerprint.new"
mv "$ENROL/root-fingerprint.new" "$ENROL/root-fingerprint"
log "ready: root fingerprint $fp"
devid device list

run_until_one_exits
