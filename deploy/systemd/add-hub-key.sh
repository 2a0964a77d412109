#!/usr/bin/env bash
# Adds a hub's ack public key to a gateway's key file, which the agent's
# mqtt.hub_keys names (deploy/agent.example.yaml: /etc/freshet/hub-ack.pub):
#   add-hub-key.sh KEYFILE HUB_PUB
# KEYFILE may hold several keys: during a rotation the old and the new one
# (README "Signed acks"). A key already there is not added again. Restart
# the agent afterwards (systemctl restart freshet-agent).
set -euo pipefail
usage="usage: add-hub-key.sh KEYFILE HUB_PUB"
dest=${1:?$usage}
src=${2:?$usage}
if grep -q "PRIVATE KEY" "$src"; then
  echo "add-hub-key.sh: $src holds a private key: a gateway gets only the hub's public key (hub-ack.pub)" >&2
  exit 1
fi
if [ "$(grep -c -- '-----BEGIN PUBLIC KEY-----' "$src")" -ne 1 ]; then
  echo "add-hub-key.sh: $src: want one PEM public key (the hub's hub-ack.pub)" >&2
  exit 1
fi
block=$(sed -n '/-----BEGIN PUBLIC KEY-----/,/-----END PUBLIC KEY-----/p' "$src")
key=$(printf '%s\n' "$block" | grep -v -- '-----' | tr -d '\r\n')
if [ -f "$dest" ] && tr -d '\r\n' < "$dest" | grep -qF -- "$key"; then
  echo "$dest already holds this key"
  exit 0
fi
printf '%s\n' "$block" >> "$dest"
chmod 0644 "$dest"
echo "added the hub key to $dest"
