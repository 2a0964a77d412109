package hub

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/freshet-iot/freshet/hub/influx"
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
	return requireToken(mux, h.httpToken, h.unauthorized)
}

// requireToken serves only requests that carry token, as a bearer token
// or as the password of basic authentication (a browser asks for it),
// except the probes /healthz and /readyz; the others get 401 and are
// counted.
func requireToken(next http.Handler, token string, unauthorized prometheus.Counter) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			_, got, ok = r.BasicAuth()
		}
		if ok && subtle.ConstantTimeCompare([]byte(got), want) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		unauthorized.Inc()
		w.Header().Set("WWW-Authenticate", `Basic realm="freshet-hub", charset="UTF-8"`)
		http.Error(w, "a token is required (http.token_file): Authorization: Bearer TOKEN, or basic authentication with it as the password", http.StatusUnauthorized)
	})
}

// InfluxStats returns the InfluxDB writer's counters.
func (h *Hub) InfluxStats() influx.Stats { return h.influx.Stats() }
