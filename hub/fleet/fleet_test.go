package fleet

import (
	"slices"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/hub/quality"
	"github.com/freshet-iot/freshet/protocol"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func batch(device string, at time.Time) *protocol.Batch {
	return &protocol.Batch{Device: device, Epoch: 1, Seq: 1, SealTime: at.UnixNano(), Series: []protocol.Series{{
		Sensor: "bme280", Metric: "temperature", Unit: "C", Type: protocol.Float, Times: []int64{at.UnixNano()}, Floats: []float64{21}}}}
}

func online(device string, at time.Time) *protocol.Status {
	return &protocol.Status{Device: device, State: protocol.StateOnline, Time: at.UnixNano()}
}

func names(devs []Device) []string {
	var out []string
	for _, d := range devs {
		out = append(out, d.Device)
	}
	return out
}

// TestMaxDevices: a full fleet refuses new devices' batches and statuses,
// counts them, and records nothing of them; known devices go on.
func TestMaxDevices(t *testing.T) {
	f := New(Options{MaxDevices: 2})
	if !f.Admit("gw-1", t0) || !f.Status(online("gw-2", t0), t0) {
		t.Fatal("refused with room")
	}
	if f.Admit("gw-3", t0.Add(time.Second)) || f.Status(online("gw-4", t0.Add(2*time.Second)), t0.Add(2*time.Second)) {
		t.Fatal("admitted beyond MaxDevices")
	}
	f.Batch(batch("gw-3", t0), t0.Add(3*time.Second)) // refused too: recorded nowhere
	f.Rejected("gw-5")
	f.Gap("gw-6", 10)
	if !f.Admit("gw-1", t0.Add(4*time.Second)) || !f.Status(online("gw-2", t0.Add(4*time.Second)), t0.Add(4*time.Second)) {
		t.Fatal("a known device refused")
	}
	if got := names(f.Devices()); !slices.Equal(got, []string{"gw-1", "gw-2"}) {
		t.Fatalf("devices %v", got)
	}
	r := f.Refusals()
	if r.Devices != 2 || r.MaxDevices != 2 || r.Refused != 3 || r.LastRefused != "gw-3" || r.RefusedAt != t0.Add(3*time.Second).UnixNano() {
		t.Fatalf("refusals %+v", r)
	}
	// Seeding from the state file ignores the bound: what is stored is known.
	f.Seed("gw-0", t0.Add(-time.Hour))
	if f.Len() != 3 || f.Admit("gw-7", t0) {
		t.Fatalf("after a seed: %d devices", f.Len())
	}
}

// TestForget: devices not heard (batch or online status) since the cut are
// silent; forgetting drops those still silent, hands them once to
// Forgotten, and makes room; a last will or findings do not keep a device.
func TestForget(t *testing.T) {
	f := New(Options{MaxDevices: 4})
	f.Batch(batch("gw-batch", t0), t0)
	f.Status(online("gw-status", t0), t0)
	f.Status(online("gw-will", t0), t0)
	f.Seed("gw-seeded", t0.Add(-80*time.Hour))
	later := t0.Add(72 * time.Hour)
	f.Status(&protocol.Status{Device: "gw-will", State: protocol.StateOffline}, later) // a last will is no sign of life
	f.Batch(batch("gw-batch", later), later)
	f.SetFindings(map[string][]quality.Finding{"gw-status": {{Kind: quality.Offline, Device: "gw-status"}}})
	cut := later.Add(-72 * time.Hour).Add(time.Nanosecond)
	silent := f.Silent(cut)
	if !slices.Equal(silent, []string{"gw-seeded", "gw-status", "gw-will"}) {
		t.Fatalf("silent %v", silent)
	}
	f.Status(online("gw-will", later), later) // heard meanwhile: kept
	got := f.Forget(silent, cut)
	if !slices.Equal(got, []string{"gw-seeded", "gw-status"}) {
		t.Fatalf("forgot %v", got)
	}
	if d := names(f.Devices()); !slices.Equal(d, []string{"gw-batch", "gw-will"}) {
		t.Fatalf("left %v", d)
	}
	if g := f.Forgotten(); !slices.Equal(g, got) || len(f.Forgotten()) != 0 {
		t.Fatalf("Forgotten %v", g)
	}
	// Findings of a forgotten device do not bring it back.
	f.SetFindings(map[string][]quality.Finding{"gw-status": {{Kind: quality.Offline, Device: "gw-status"}}, "": {{Kind: quality.Limit}}})
	if f.Len() != 2 {
		t.Fatalf("%d devices after SetFindings", f.Len())
	}
	for _, n := range []string{"gw-a", "gw-b"} {
		if !f.Admit(n, later) {
			t.Fatalf("%s refused: forgetting made no room", n)
		}
	}
}

// TestObservationsFollowChanges: the checks get the observations of the
// devices heard since they last asked, not of every device.
func TestObservationsFollowChanges(t *testing.T) {
	f := New(Options{})
	for _, n := range []string{"gw-1", "gw-2", "gw-3"} {
		f.Batch(batch(n, t0), t0)
	}
	if o := f.Observations(); len(o) != 3 || o["gw-2"].LastAlive != t0.UnixNano() {
		t.Fatalf("first: %v", o)
	}
	if o := f.Observations(); len(o) != 0 {
		t.Fatalf("nothing heard, yet %d observations", len(o))
	}
	f.Status(online("gw-2", t0), t0.Add(time.Minute))
	f.Limited("gw-3", 1024, "limits.series_per_device", t0.Add(time.Minute))
	f.Rejected("gw-1")
	o := f.Observations()
	if len(o) != 2 || o["gw-2"] == nil || o["gw-3"].Limits.At != t0.Add(time.Minute).UnixNano() || o["gw-3"].Limits.Hits != 1 {
		t.Fatalf("after a status and a limit: %v", o)
	}
	f.Applied("gw-3", 0, 0, false, t0.Add(2*time.Minute))
	if o := f.Observations(); len(o) != 0 {
		t.Fatalf("a batch applied with a limit biting is no change: %v", o)
	}
	f.Applied("gw-3", 1, 0, true, t0.Add(3*time.Minute))
	if o := f.Observations(); len(o) != 1 || o["gw-3"].Limits.CleanAt != t0.Add(3*time.Minute).UnixNano() || o["gw-3"].Limits.Hits != 0 {
		t.Fatalf("after a clean batch: %v", o)
	}
}
