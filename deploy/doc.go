// Package deploy holds what users install (systemd units, the Mosquitto
// recipe, example configs) and the tests that keep those files true
// against the code: they run Mosquitto with the shipped config, parse the
// units, and load the example configs.
package deploy
