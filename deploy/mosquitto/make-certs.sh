#!/usr/bin/env bash
# Makes the certificates of a freshet deployment with mutual TLS:
#   make-certs.sh OUTDIR BROKER_HOST [DEVICE_ID ...]
# OUTDIR/ca.pem, ca.key        the CA (made once; keep ca.key offline)
# OUTDIR/broker.pem, .key      the broker's server certificate (BROKER_HOST, localhost, 127.0.0.1)
# OUTDIR/hub.pem, .key         the hub's client certificate (CN freshet-hub)
# OUTDIR/devices/ID.pem, .key  one client certificate per device (CN = the device id)
# Run it again with new device ids to add devices; the CA is reused.
# Mosquitto's use_identity_as_username makes the CN the MQTT username, and
# the ACL (deploy/mosquitto/acl) confines each device to its own topics.
set -euo pipefail
out=${1:?usage: make-certs.sh OUTDIR BROKER_HOST [DEVICE_ID ...]}
host=${2:?usage: make-certs.sh OUTDIR BROKER_HOST [DEVICE_ID ...]}
shift 2
days=${FRESHET_CERT_DAYS:-825}
mkdir -p "$out/devices"
cd "$out"
umask 077

if [ ! -f ca.key ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 3650 -subj "/CN=freshet CA" 2>/dev/null
fi

# issue CN BASE EXTENSIONS: a P-256 key and a certificate signed by the CA.
issue() {
  local cn=$1 base=$2 ext=$3
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$base.key" -out "$base.csr" -subj "/CN=$cn" 2>/dev/null
  openssl x509 -req -in "$base.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$base.pem" -days "$days" -extfile <(printf '%b' "$ext") 2>/dev/null
  rm -f "$base.csr"
  chmod 600 "$base.key"
  chmod 644 "$base.pem"
}

san="DNS:$host"
if [[ $host =~ ^[0-9.]+$ ]]; then san="IP:$host"; fi
if [ ! -f broker.pem ]; then
  issue "$host" broker "subjectAltName=$san,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
fi
if [ ! -f hub.pem ]; then
  issue freshet-hub hub "extendedKeyUsage=clientAuth"
fi
for id in "$@"; do
  if ! [[ $id =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]]; then
    echo "make-certs.sh: $id is not a device id (1-64 of A-Z a-z 0-9 . _ -, starting alphanumeric)" >&2
    exit 2
  fi
  issue "$id" "devices/$id" "extendedKeyUsage=clientAuth"
done
chmod 644 ca.pem
echo "certificates in $out: ca.pem, broker.pem/.key, hub.pem/.key, devices/ for: $*"
