#!/usr/bin/env bash
# Installs freshet-agent on a Raspberry Pi OS (or any systemd) gateway:
#   sudo ./install.sh freshet-agent-linux-arm64 [agent.yaml] [hub-ack.pub]
# Copies the binary to /usr/local/bin, creates the freshet user, installs
# the config (only if none exists), adds the hub's ack public key to
# /etc/freshet/hub-ack.pub (the example config's mqtt.hub_keys; the agent
# obeys no ack signed by another key), installs the unit, checks the
# config, and enables the service.
set -euo pipefail
bin=${1:?usage: install.sh BINARY [CONFIG] [HUB_PUB]}
config=${2:-}
hubkey=${3:-}
if [ -n "$config" ] && grep -q -- "-----BEGIN PUBLIC KEY-----" "$config" 2>/dev/null; then
  hubkey=$config # the hub's key without a config of our own
  config=
fi
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }

install -m 0755 "$bin" /usr/local/bin/freshet-agent
if ! id freshet >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/freshet-agent --shell /usr/sbin/nologin freshet
fi
getent group i2c >/dev/null && usermod -aG i2c freshet
getent group dialout >/dev/null && usermod -aG dialout freshet # serial ports: Modbus RTU
install -d -m 0750 -o root -g freshet /etc/freshet
if [ ! -f /etc/freshet/agent.yaml ]; then
  src=${config:-$here/../agent.example.yaml}
  install -m 0640 -o root -g freshet "$src" /etc/freshet/agent.yaml
  echo "installed $src as /etc/freshet/agent.yaml: edit device, mqtt and sensors, then: systemctl restart freshet-agent"
fi
if [ -n "$hubkey" ]; then
  "$here/add-hub-key.sh" /etc/freshet/hub-ack.pub "$hubkey"
  chgrp freshet /etc/freshet/hub-ack.pub
elif [ ! -f /etc/freshet/hub-ack.pub ]; then
  echo "install.sh: no hub key: the agent obeys only acks signed by a key in mqtt.hub_keys; give the hub's hub-ack.pub as an argument, or run $here/add-hub-key.sh /etc/freshet/hub-ack.pub HUB_PUB" >&2
fi
install -m 0644 "$here/freshet-agent.service" /etc/systemd/system/freshet-agent.service
/usr/local/bin/freshet-agent -config /etc/freshet/agent.yaml -check || echo "install.sh: the config check found problems (above); fix them before relying on it" >&2
systemctl daemon-reload
systemctl enable --now freshet-agent
systemctl --no-pager status freshet-agent || true
