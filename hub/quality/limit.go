package quality

import (
	"fmt"
	"slices"
)

// The limits of the hub's config (limits: devices, series_per_device,
// epochs_per_device) bound what a device, or a flood of made-up devices,
// can make the hub keep. When one bites, it is a finding: a device's own
// (kind limit, on the device) for its series and epochs, and the hub's
// (kind limit, no device) for devices it refused because it knows as many
// as limits.devices allows.

// DeviceLimits is what the per-device limits did to a device since the hub
// started (hub/fleet keeps it).
type DeviceLimits struct {
	// At is the hub's clock when a limit last bit (0: never since the hub
	// started); Hits counts the bites since the last batch applied clean;
	// Value is the limit that bit last and Detail says what it did.
	At     int64
	Hits   int64
	Value  int64
	Detail string
	// CleanAt is the hub's clock at the last batch applied with no limit
	// biting.
	CleanAt int64
}

// checkLimits opens the device's limit finding when a limit bit after its
// last clean batch, and resolves it with the next clean batch.
func (d *DeviceState) checkLimits(o *DeviceObs, emit func(Event)) {
	l := &o.Limits
	if f := d.Open.get(Limit); f != nil {
		f.Count = max(f.Count, l.Hits)
		if l.CleanAt > l.At {
			d.Open.resolve(Limit, l.CleanAt, emit)
		}
		return
	}
	if l.At > 0 && l.At > l.CleanAt {
		f := Finding{Kind: Limit, Device: o.Device, Opened: l.At, Value: float64(l.Value), Count: l.Hits, Detail: l.Detail}
		d.Open.open(f, emit)
	}
}

// HubObs is what the hub's device limit did, for the hub's own finding.
type HubObs struct {
	Now int64 // the hub's clock, Unix ns
	// Devices is how many devices the hub knows now; MaxDevices is
	// limits.devices.
	Devices, MaxDevices int
	// Refused counts the batches and statuses of new devices refused
	// since the hub started; RefusedAt is the hub's clock at the last one,
	// LastRefused its device.
	Refused     int64
	RefusedAt   int64
	LastRefused string
}

// HubState is the checks' state for the hub's own findings, kept between
// runs.
type HubState struct {
	// Refused is HubObs.Refused as last accounted.
	Refused int64    `json:"refused"`
	Open    findings `json:"open,omitempty"`
}

// Check opens the hub's limit finding when the device limit refused a
// device, and resolves it when the hub has room again (a device forgotten,
// or the limit raised): the refused agents' next resends are then taken.
func (h *HubState) Check(o *HubObs, emit func(Event)) {
	if o.Refused < h.Refused { // the hub restarted, and its counter with it
		h.Refused = 0
	}
	n := o.Refused - h.Refused
	h.Refused = o.Refused
	if f := h.Open.get(Limit); f != nil {
		f.Count += n
		if o.Devices < o.MaxDevices {
			h.Open.resolve(Limit, o.Now, emit)
		}
		return
	}
	if n > 0 {
		f := Finding{Kind: Limit, Opened: o.RefusedAt, Value: float64(o.MaxDevices), Count: n,
			Detail: fmt.Sprintf("limits.devices (%d) reached: batches of devices the hub does not know (the last: %s) are not acked "+
				"and wait on their disks, and their statuses are ignored; raise limits.devices, or devices silent for "+
				"windows.correction_horizon are forgotten", o.MaxDevices, o.LastRefused)}
		h.Open.open(f, emit)
	}
}

// Equal reports whether h and o hold the same state.
func (h *HubState) Equal(o *HubState) bool {
	return h.Refused == o.Refused && slices.Equal(h.Open, o.Open)
}

// Clone returns a deep copy.
func (h *HubState) Clone() *HubState {
	c := *h
	c.Open = slices.Clone(h.Open)
	return &c
}

// OpenFindings returns the open findings.
func (h *HubState) OpenFindings() []Finding { return slices.Clone(h.Open) }

// Forget resolves open findings at now (the hub's clock) because the hub
// forgets their device (why says so; it ends each detail).
func Forget(open []Finding, now int64, why string, emit func(Event)) {
	fs := findings(slices.Clone(open))
	for len(fs) > 0 {
		f := &fs[0]
		f.Detail += "; " + why
		fs.resolve(f.Kind, now, emit)
	}
}
