package hub

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/freshet-iot/freshet/hub/influx"
	"github.com/freshet-iot/freshet/internal/exposure"
)

// Handler serves the fleet page (/), a device's page (/device/{id}),
// /metrics, /healthz, /readyz, /api/v1/devices and /api/v1/rejections
// (the newest refused payloads).
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", h.pages.Fleet)
	mux.HandleFunc("GET /device/{id}", h.pages.Device)
	mux.Handle("/metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var problems []string
		if !h.pipeline.Connected() {
			problems = append(problems, "broker: not connected")
		}
		if err := h.influx.Ping(ctx); err != nil {
			problems = append(problems, "influxdb: "+err.Error())
		} else if h.pipeline.InfluxRefused() {
			problems = append(problems, "influxdb: refusing writes (check influx.token and influx.bucket)")
		}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			json.NewEncoder(w).Encode(map[string]any{"ready": false, "problems": problems})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"ready": true})
	})
	mux.HandleFunc("/api/v1/rejections", func(w http.ResponseWriter, r *http.Request) {
		dl, err := h.pipeline.DeadLetters(100)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"rejections": dl})
	})
	mux.HandleFunc("/api/v1/devices", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"devices": h.fleet.Devices()})
	})
	if h.httpToken == "" {
		return mux
	}
	return exposure.RequireToken(mux, exposure.Guard{Token: h.httpToken, Realm: "freshet-hub", Key: "http.token_file",
		Open: []string{"/healthz", "/readyz"}, Refused: h.unauthorized.Inc})
}

// InfluxStats returns the InfluxDB writer's counters.
func (h *Hub) InfluxStats() influx.Stats { return h.influx.Stats() }
