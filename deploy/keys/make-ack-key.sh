#!/usr/bin/env bash
# Makes the key pair the hub signs its acks with (Ed25519):
#   make-ack-key.sh OUTDIR
# OUTDIR/hub-ack.key  the private key, PEM PKCS#8, mode 0600: the hub's
#                     ack_key_file. Only hubs hold it.
# OUTDIR/hub-ack.pub  the public key, PEM: every agent's mqtt.hub_keys.
# It prints the key id (the first 8 bytes of the SHA-256 of the raw public
# key, as acks name it) and the public key in base64 (hub_keys takes it
# inline too). It never overwrites a key: a new key is a rotation (README,
# "Signed acks"). `freshet-hub -genkey OUTDIR` writes the same files
# without openssl.
set -euo pipefail
out=${1:?usage: make-ack-key.sh OUTDIR}
mkdir -p "$out"
cd "$out"
for f in hub-ack.key hub-ack.pub; do
  if [ -e "$f" ]; then
    echo "make-ack-key.sh: $out/$f exists: move it away first (a new key is a rotation: README \"Signed acks\")" >&2
    exit 1
  fi
done
umask 077
openssl genpkey -algorithm ed25519 -out hub-ack.key
openssl pkey -in hub-ack.key -pubout -out hub-ack.pub
chmod 600 hub-ack.key
chmod 644 hub-ack.pub
# The raw key is the last 32 bytes of the public key's DER.
raw() { openssl pkey -pubin -in hub-ack.pub -outform DER | tail -c 32; }
id=$(raw | openssl dgst -sha256 -binary | head -c 8 | od -An -tx1 | tr -d ' \n')
b64=$(raw | openssl base64 -A)
echo "hub-ack.key (the hub's ack_key_file) and hub-ack.pub (the agents' mqtt.hub_keys) in $out"
echo "key id     $id"
echo "public key $b64"
