//go:build tools

// Package deps pins modules the next commits use, so go mod tidy keeps them.
package deps

import (
	_ "github.com/prometheus/client_golang/prometheus"
	_ "go.etcd.io/bbolt"
	_ "go.yaml.in/yaml/v3"
	_ "periph.io/x/conn/v3/i2c"
	_ "periph.io/x/devices/v3/bmxx80"
	_ "periph.io/x/host/v3"
)
