package fleet

import (
	"time"

	"github.com/freshet-iot/freshet/hub/quality"
)

// The JSON of GET /api/v1/devices (README.md, "HTTP"): snake_case names,
// durations in seconds, times in RFC 3339.

// Device is the hub's view of one device.
type Device struct {
	Device string `json:"device"`
	// LastSeen is the hub's clock at its last batch or status.
	LastSeen time.Time `json:"last_seen"`
	// State, AgentVersion, Backlog, Dropped, ClockSynced, Notice and
	// Sensors come from the agent's last status; State is "online",
	// "offline" (its last will, or a clean stop) or "" (no status yet).
	State        string   `json:"state"`
	AgentVersion string   `json:"agent_version,omitempty"`
	Backlog      Backlog  `json:"backlog"`
	Dropped      uint64   `json:"dropped"`
	ClockSynced  bool     `json:"clock_synced"`
	Notice       string   `json:"notice,omitempty"`
	Sensors      []Sensor `json:"sensors,omitempty"`
	// LastSeq is the highest seq received per epoch (16 hex digits).
	LastSeq map[string]uint64 `json:"last_seq"`
	// Rejections counts its refused batches; GapReadings the readings its
	// gap notices reported dropped; Corrections the windows its late
	// readings reopened; TooLate its readings beyond the correction horizon.
	Rejections  uint64 `json:"rejections"`
	GapReadings uint64 `json:"gap_readings"`
	Corrections uint64 `json:"corrections"`
	TooLate     uint64 `json:"too_late"`
	// ClockOffsetSeconds estimates the device clock minus the hub's, from
	// seal times (a batch is sealed and sent at once when the link is up:
	// the largest recent difference is the best estimate).
	ClockOffsetSeconds float64 `json:"clock_offset_seconds"`
	// Series holds the recent readings of its temperature series, one
	// entry per sensor (at most RecentSeries, RecentMax readings each).
	Series []Series `json:"series,omitempty"`
	// Findings are its open data quality findings (device and series).
	Findings []Finding `json:"findings,omitempty"`
}

// Backlog is what waits on the device's disk.
type Backlog struct {
	Batches  uint64 `json:"batches"`
	Readings uint64 `json:"readings"`
	Bytes    uint64 `json:"bytes"`
}

// Sensor is one configured sensor of the agent, from its status.
type Sensor struct {
	Name            string  `json:"name"`
	IntervalSeconds float64 `json:"interval_seconds"`
	Reads           uint64  `json:"reads"`
	Errors          uint64  `json:"errors"`
	LastError       string  `json:"last_error,omitempty"`
}

// Series is one series' recent readings.
type Series struct {
	Sensor string  `json:"sensor"`
	Metric string  `json:"metric"`
	Unit   string  `json:"unit,omitempty"`
	Last   float64 `json:"last"`
	Recent []Point `json:"recent"`
}

// Point is one reading.
type Point struct {
	T int64   `json:"t"` // Unix ns, event time
	V float64 `json:"v"`
}

// Finding is an open data quality finding (hub/quality; README.md, "Data
// quality").
type Finding struct {
	Kind   quality.Kind `json:"kind"`
	Sensor string       `json:"sensor,omitempty"` // series findings only
	Metric string       `json:"metric,omitempty"`
	// Opened is in event time for series findings, on the hub's clock for
	// device findings.
	Opened time.Time `json:"opened"`
	Value  float64   `json:"value"`
	Count  int64     `json:"count"`
	Detail string    `json:"detail"`
}

func findingView(f quality.Finding) Finding {
	return Finding{Kind: f.Kind, Sensor: f.Sensor, Metric: f.Metric, Opened: time.Unix(0, f.Opened).UTC(), Value: f.Value, Count: f.Count, Detail: f.Detail}
}
