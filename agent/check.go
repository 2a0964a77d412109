package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/freshet-iot/freshet/agent/sensor"
	"github.com/freshet-iot/freshet/internal/boundlog"
	"github.com/freshet-iot/freshet/protocol"
)

// NewLogger builds the slog logger the config asks for.
func NewLogger(c LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level)) // validated
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(boundlog.New(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(boundlog.New(slog.NewTextHandler(w, opts)))
}

// Check prints what the agent would run and reads every sensor once. It
// returns the number of problems found (0: all good).
func Check(cfg *Config, env *sensor.Env, w io.Writer) int {
	problems := 0
	fmt.Fprintf(w, "device      %s\n", cfg.Device)
	fmt.Fprintf(w, "broker      %s (topics %s/v1/%s/...)\n", cfg.MQTT.Broker, orDefault(cfg.MQTT.TopicPrefix, "freshet"), cfg.Device)
	fmt.Fprintf(w, "outbox      %s/outbox.db, at most %d bytes, %s, commit every %v, batches sealed after %v\n",
		cfg.DataDir, cfg.Outbox.MaxBytes, cfg.Outbox.DropPolicy, cfg.Outbox.CommitInterval, cfg.Outbox.MaxBatchAge)
	fmt.Fprintf(w, "http        %s\n", cfg.HTTP.Listen)
	if _, err := cfg.MQTT.Password(); err != nil {
		fmt.Fprintf(w, "PROBLEM     %v\n", err)
		problems++
	}
	if _, err := cfg.HTTP.Token(); err != nil {
		fmt.Fprintf(w, "PROBLEM     %v\n", err)
		problems++
	}
	if _, err := cfg.MQTT.TLSClientConfig(); err != nil {
		fmt.Fprintf(w, "PROBLEM     %v\n", err)
		problems++
	}
	if keys, err := cfg.MQTT.AckKeys(); err != nil {
		fmt.Fprintf(w, "PROBLEM     %v\n", err)
		problems++
	} else if keys == nil {
		fmt.Fprintf(w, "acks        NOT VERIFIED (mqtt.insecure_unsigned_acks): whoever can publish on the broker can make this agent delete readings\n")
	} else {
		ids := keys.IDs()
		slices.Sort(ids)
		fmt.Fprintf(w, "acks        signed by hub key %s\n", strings.Join(ids, ", "))
	}
	e := sensor.HostEnv()
	if env != nil {
		e = *env
	}
	if e.SysRoot == "" {
		e.SysRoot = cfg.SysRoot
	}
	if e.Modbus == nil {
		e.Modbus = sensor.NewModbusPool()
	}
	var opened []sensor.Source // closed at the end: sensors on one port share it
	defer func() {
		for _, src := range opened {
			src.Close()
		}
	}()
	for _, c := range cfg.Sensors {
		fmt.Fprintf(w, "sensor      %-16s %-9s every %-6v ", c.Name, c.Type, c.Interval)
		if where := sourceOf(c); where != "" {
			fmt.Fprintf(w, "%s ", where)
		}
		src, err := sensor.Open(c, e)
		if err != nil {
			fmt.Fprintf(w, "PROBLEM: %v\n", err)
			problems++
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(time.Duration(c.Timeout), time.Second))
		vals, err := src.Read(ctx)
		cancel()
		opened = append(opened, src)
		if err != nil {
			fmt.Fprintf(w, "PROBLEM: read: %v (reason %s)\n", err, sensor.Reason(err))
			problems++
			continue
		}
		if len(vals) <= 3 {
			var parts []string
			for _, v := range vals {
				parts = append(parts, fmt.Sprintf("%s=%s%s", v.Metric, valueString(v), v.Unit))
			}
			fmt.Fprintf(w, "ok: %s\n", strings.Join(parts, " "))
			continue
		}
		// A field device's register map or tag set: one value a line.
		fmt.Fprintf(w, "ok: %d values\n", len(vals))
		for _, v := range vals {
			line := fmt.Sprintf("              %-20s %s", v.Metric, valueString(v))
			if v.Unit != "" {
				line += " " + v.Unit
			}
			if v.Time != 0 {
				line += " at " + time.Unix(0, v.Time).UTC().Format(time.RFC3339Nano) + " (source time)"
			}
			fmt.Fprintln(w, line)
		}
	}
	if problems > 0 {
		fmt.Fprintf(w, "%d problem(s)\n", problems)
	}
	return problems
}

// sourceOf says where a field-bus sensor reads from.
func sourceOf(c sensor.Config) string {
	switch {
	case c.Modbus != nil:
		where := c.Modbus.Endpoint
		if c.Modbus.Transport == sensor.ModbusRTU {
			where = fmt.Sprintf("%s %d %s %d/%d", c.Modbus.Device, c.Modbus.Baud, c.Modbus.Parity, c.Modbus.DataBits, c.Modbus.StopBits)
		}
		return fmt.Sprintf("(modbus %s %s unit %d)", c.Modbus.Transport, where, *c.Modbus.Unit)
	case c.OPCUA != nil:
		return fmt.Sprintf("(opcua %s %s/%s, %s)", c.OPCUA.Endpoint, c.OPCUA.SecurityPolicy, c.OPCUA.SecurityMode, c.OPCUA.Mode)
	}
	return ""
}

func valueString(v sensor.Value) string {
	switch {
	case v.Str != "":
		return fmt.Sprintf("%q", v.Str)
	case v.Type == protocol.Int:
		return fmt.Sprint(v.Int)
	case v.Type == protocol.Bool:
		return fmt.Sprint(v.Bool)
	}
	return fmt.Sprint(v.Float)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
