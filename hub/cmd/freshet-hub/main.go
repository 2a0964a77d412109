// Command freshet-hub takes agents' batches from the broker, stores raw and
// aggregated series in InfluxDB exactly once, and acks the agents. See
// README.md and deploy/hub.example.yaml.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/freshet-iot/freshet/hub"
	"github.com/freshet-iot/freshet/internal/ackkey"
	"github.com/freshet-iot/freshet/internal/boundlog"
	"github.com/freshet-iot/freshet/internal/cfgfile"
	"github.com/freshet-iot/freshet/internal/version"
	"github.com/freshet-iot/freshet/protocol"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	configPath := flag.String("config", "/etc/freshet/hub.yaml", "the config file")
	check := flag.Bool("check", false, "validate the config, print what would run, and exit")
	showVersion := flag.Bool("version", false, "print the version and exit")
	probe := flag.String("probe", "", "GET this URL and exit 0 on 200 (a container health check without a shell)")
	genkey := flag.String("genkey", "", "make a new ack signing key pair in this directory ("+ackkey.KeyFile+", "+ackkey.PubFile+") and exit")
	flag.Parse()
	if *genkey != "" {
		s, err := ackkey.Generate(*genkey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "freshet-hub: -genkey:", err)
			os.Exit(1)
		}
		fmt.Printf("wrote %s (the hub's: ack_key_file) and %s (the agents': mqtt.hub_keys)\nkey id     %s\npublic key %s\n",
			filepath.Join(*genkey, ackkey.KeyFile), filepath.Join(*genkey, ackkey.PubFile), s.KeyID(), ackkey.PublicBase64(s.Public()))
		return
	}
	if *probe != "" {
		resp, err := http.Get(*probe)
		if err != nil || resp.StatusCode != http.StatusOK {
			fmt.Fprintln(os.Stderr, "freshet-hub: probe:", err, resp)
			os.Exit(1)
		}
		return
	}
	if *showVersion {
		fmt.Println(version.String("freshet-hub"))
		return
	}
	cfg, err := hub.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "freshet-hub:", err)
		os.Exit(2)
	}
	debug.SetGCPercent(cfg.Memory.GCPercent)
	if cfg.Memory.Limit > 0 {
		debug.SetMemoryLimit(int64(cfg.Memory.Limit))
	}
	if *check {
		signer, err := cfg.AckSigner()
		if err != nil {
			fmt.Fprintf(os.Stderr, "freshet-hub: %s: %v\n", *configPath, err)
			os.Exit(2)
		}
		fmt.Printf("state   %s/hub.db\nbroker  %s\ninflux  %s bucket %s\nwindows %v\nhttp    %s\nacks    %s\n",
			cfg.DataDir, brokerDesc(cfg), cfgfile.Redact(cfg.Influx.URL), cfg.Influx.Bucket, cfg.Windows.Sizes, cfg.HTTP.Listen, acksDesc(signer))
		return
	}
	level := new(slog.LevelVar)
	level.UnmarshalText([]byte(cfg.Log.Level))
	var log *slog.Logger
	if cfg.Log.Format == "json" {
		log = slog.New(boundlog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	} else {
		log = slog.New(boundlog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	}
	// The Go runtime's and the process's metrics (go_memstats_*,
	// go_goroutines, process_resident_memory_bytes...) next to the hub's.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h, err := hub.New(cfg, hub.Options{Logger: log, Registry: reg, Failpoint: failpoint()})
	if err != nil {
		log.Error("cannot start", "err", err)
		os.Exit(1)
	}
	log.Info("started", "version", version.Version)
	if err := h.Run(ctx); err != nil {
		log.Error("stopped with an error", "err", err)
		os.Exit(1)
	}
}

func acksDesc(s *protocol.AckSigner) string {
	if s == nil {
		return "UNSIGNED (insecure_unsigned_acks): anyone who can publish on the broker can make agents delete readings"
	}
	return fmt.Sprintf("signed, key id %s, public key %s (agents: mqtt.hub_keys)", s.KeyID(), ackkey.PublicBase64(s.Public()))
}

func brokerDesc(cfg *hub.Config) string {
	if cfg.Broker.Embedded != nil {
		return "embedded, listening on " + cfg.Broker.Embedded.Listen
	}
	return cfgfile.Redact(cfg.Broker.URL)
}
