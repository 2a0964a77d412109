package quality

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDeviceLimit: a limit biting opens the device's limit finding once,
// more bites count into it, and the next clean batch resolves it; a
// restart (the fleet's memory of the bites gone) keeps it open until then.
func TestDeviceLimit(t *testing.T) {
	c := &Config{}
	c.Validate()
	d, r := &DeviceState{}, &rec{}
	o := &DeviceObs{Device: "gw-1", Now: t0, LastAlive: t0}
	o.Limits.CleanAt = t0
	d.Check(c, o, r.emit)
	if len(r.evs) != 0 {
		t.Fatalf("clean: %s", r.kinds())
	}
	o.Now, o.Limits = t0+5*sec, DeviceLimits{At: t0 + 4*sec, Hits: 1, Value: 1024, Detail: "limits.series_per_device", CleanAt: t0}
	d.Check(c, o, r.emit)
	o.Now, o.Limits.Hits, o.Limits.At = t0+10*sec, 3, t0+9*sec
	d.Check(c, o, r.emit)
	if r.kinds() != "limit:opened" || r.evs[0].Opened != t0+4*sec || r.evs[0].Value != 1024 || r.evs[0].Device != "gw-1" {
		t.Fatalf("opened: %s %+v", r.kinds(), r.evs)
	}
	// The hub restarts: its fleet forgot the bites; the finding stays open.
	d = roundTrip(t, d)
	o.Now, o.Limits = t0+20*sec, DeviceLimits{}
	d.Check(c, o, r.emit)
	if len(r.evs) != 1 {
		t.Fatalf("after a restart: %s", r.kinds())
	}
	o.Now, o.Limits.CleanAt = t0+30*sec, t0+29*sec
	d.Check(c, o, r.emit)
	if r.kinds() != "limit:opened limit:resolved" || r.evs[1].Resolved != t0+29*sec || r.evs[1].Count != 3 {
		t.Fatalf("resolved: %s %+v", r.kinds(), r.evs)
	}
	d.Check(c, o, r.emit)
	if len(r.evs) != 2 {
		t.Fatalf("found again: %s", r.kinds())
	}
}

func roundTrip(t *testing.T, d *DeviceState) *DeviceState {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	out := &DeviceState{}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestHubLimit: refusals of new devices open the hub's limit finding (no
// device) with their count; it resolves when the hub has room again, and a
// restart (the counter back at zero) neither reopens nor miscounts it.
func TestHubLimit(t *testing.T) {
	h, r := &HubState{}, &rec{}
	o := &HubObs{Now: t0, Devices: 10, MaxDevices: 10}
	h.Check(o, r.emit)
	o.Now, o.Refused, o.RefusedAt, o.LastRefused = t0+5*sec, 2, t0+4*sec, "gw-11"
	h.Check(o, r.emit)
	o.Now, o.Refused = t0+10*sec, 5
	h.Check(o, r.emit)
	if r.kinds() != "limit:opened" || r.evs[0].Device != "" || r.evs[0].Opened != t0+4*sec || r.evs[0].Value != 10 ||
		!strings.Contains(r.evs[0].Detail, "gw-11") || h.Open[0].Count != 5 {
		t.Fatalf("opened: %s %+v %+v", r.kinds(), r.evs, h.Open)
	}
	o.Refused = 1 // restarted
	h.Check(o, r.emit)
	if h.Open[0].Count != 6 {
		t.Fatalf("count after a restart: %d", h.Open[0].Count)
	}
	o.Now, o.Devices = t0+20*sec, 9
	h.Check(o, r.emit)
	h.Check(o, r.emit)
	if r.kinds() != "limit:opened limit:resolved" || r.evs[1].Resolved != t0+20*sec || r.evs[1].Count != 6 {
		t.Fatalf("resolved: %s %+v", r.kinds(), r.evs)
	}
}

// TestForgetResolves: forgetting a device resolves its open findings, and
// says why.
func TestForgetResolves(t *testing.T) {
	c := &Config{}
	c.Validate()
	d, r := &DeviceState{}, &rec{}
	o := &DeviceObs{Device: "gw-1", Now: t0 + int64(10*60)*sec, LastAlive: t0}
	d.Check(c, o, r.emit)
	stuck := Finding{Kind: Stuck, Device: "gw-1", Sensor: "a", Metric: "temperature", Opened: t0, Detail: "stuck"}
	at := t0 + int64(73*3600)*sec
	Forget(d.OpenFindings(), at, "forgotten", r.emit)
	Forget([]Finding{stuck}, at, "forgotten", r.emit)
	if r.kinds() != "offline:opened offline:resolved stuck:resolved" || !strings.HasSuffix(r.evs[1].Detail, "; forgotten") ||
		r.evs[2].Resolved != at || r.evs[2].Detail != "stuck; forgotten" || len(d.Open) != 1 {
		t.Fatalf("%s %+v", r.kinds(), r.evs)
	}
}
