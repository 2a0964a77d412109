// Command freshet-agent reads a gateway's sensors, keeps every reading on
// disk until the hub confirms it is stored, and forwards batches over MQTT.
// See README.md and deploy/agent.example.yaml.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/freshet-iot/freshet/agent"
	"github.com/freshet-iot/freshet/internal/version"
)

func main() {
	// First, so a SIGTERM during start-up is a clean stop, not a kill.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	configPath := flag.String("config", "/etc/freshet/agent.yaml", "the config file")
	check := flag.Bool("check", false, "validate the config, read each sensor once, print what would run, and exit (non-zero on any problem)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.String("freshet-agent"))
		return
	}
	cfg, err := agent.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "freshet-agent:", err)
		os.Exit(2)
	}
	if *check {
		if agent.Check(cfg, nil, os.Stdout) > 0 {
			os.Exit(1)
		}
		return
	}
	debug.SetGCPercent(cfg.Memory.GCPercent)
	log := agent.NewLogger(cfg.Log, os.Stderr)
	a, err := agent.New(cfg, agent.Options{Logger: log, Version: version.Version})
	if err != nil {
		log.Error("cannot start", "err", err)
		os.Exit(1)
	}
	log.Info("started", "version", version.Version, "device", cfg.Device, "broker", cfg.MQTT.Broker)
	if err := a.Run(ctx); err != nil {
		log.Error("stopped with an error", "err", err)
		os.Exit(1)
	}
	log.Info("stopped cleanly")
}
