// Command freshet-sim runs simulated gateways: against a broker of your
// choice, or (-demo) as the whole local demo behind `make run`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/freshet-iot/freshet/firmware-sim/demo"
	"github.com/freshet-iot/freshet/firmware-sim/fleet"
	"github.com/freshet-iot/freshet/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	devices := flag.Int("devices", 20, "simulated gateways")
	field := flag.Int("field", 1, "of them, field gateways that also read a Modbus meter and soil probe and an OPC UA PLC")
	seed := flag.Uint64("seed", 1, "seed of the signals and faults")
	broker := flag.String("broker", "tcp://127.0.0.1:1883", "MQTT broker (without -demo)")
	data := flag.String("data", ".run/fleet", "the devices' outboxes (without -demo)")
	flaky := flag.Bool("flaky", true, "cut links and make chips misbehave now and then")
	interval := flag.Duration("interval", time.Second, "BME280 read interval")
	hubKeys := flag.String("hub-keys", "", "the hub's ack public keys, comma-separated: PEM files or base64 keys (without -demo; the agents' mqtt.hub_keys)")
	unsigned := flag.Bool("insecure-unsigned-acks", false, "obey unsigned acks (without -demo; the agents' mqtt.insecure_unsigned_acks)")
	demoMode := flag.Bool("demo", false, "run influxd, freshet-hub and the fleet together (make run)")
	work := flag.String("work", ".run", "the demo's working directory")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.String("freshet-sim"))
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	stdlog.SetOutput(io.Discard) // the emulated PLC's OPC UA server writes to the standard logger
	if *demoMode {
		exe, _ := os.Executable()
		err := demo.Run(ctx, demo.Options{Devices: *devices, FieldGateways: *field, Seed: *seed, WorkDir: *work,
			HubBin: filepath.Join(filepath.Dir(exe), "freshet-hub"), Out: os.Stdout, Logger: log})
		if err != nil {
			fmt.Fprintln(os.Stderr, "freshet-sim:", err)
			os.Exit(1)
		}
		return
	}
	var keys []string
	if *hubKeys != "" {
		keys = strings.Split(*hubKeys, ",")
	}
	f, err := fleet.New(fleet.Options{Devices: *devices, FieldGateways: *field, Seed: *seed, Broker: *broker, DataDir: *data, Flaky: *flaky, Interval: *interval, Logger: log,
		HubKeys: keys, InsecureUnsignedAcks: *unsigned})
	if err != nil {
		fmt.Fprintln(os.Stderr, "freshet-sim:", err)
		os.Exit(1)
	}
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			fmt.Println()
			return
		case <-t.C:
			s := f.Stats()
			fmt.Printf("\r%d/%d connected | committed %d | acked %d | on devices %d | dropped %d | links down %d   ",
				s.Connected, s.Devices, s.Committed, s.Settled, s.BacklogReadings, s.Dropped, s.LinksDown)
		}
	}
}
