// Package quality finds bad data in the hub: devices gone quiet, series
// with missing readings, stuck sensors, values outside their range or
// jumping faster than they physically can, and device clocks that are off
// or were never set.
//
// # Event time, so late data raises nothing
//
// Series checks (silent, stuck, out_of_range, rate) run over each series'
// readings in event-time order, and only up to the device's progress: its
// window watermark (the latest event time it delivered) minus the allowed
// lateness, or the time of its last status if that status said nothing
// was waiting on its disk. A device that is offline makes no progress, so
// its series cannot look silent; when it delivers six hours late, the
// readings fill the hours in order and no gap is ever seen. The hub keeps
// the readings in time order already (hub/window's minute blobs), so the
// checks read them from there and never depend on arrival order.
//
// Device checks (offline, clock_offset, clock_unset) are about the device
// now, on the hub's clock. Offline is a device the hub has heard nothing
// from (no batch, no online status) for OfflineAfter; its readings wait on
// its disk and arrive when it is back, so a device offline is told apart
// from a device alive whose sensor is silent (a series finding).
//
// # Findings
//
// A finding opens when its condition starts and resolves when it ends;
// both are events, written as rows of the freshet_quality measurement
// (README.md) and counted in Prometheus. Series findings are stamped in
// event time, device findings on the hub's clock. Each finding is found
// once: state is kept per series and per device in the hub's database and
// survives restarts.
//
// # Thresholds
//
// Defaults work with no configuration: the physical range of temperature
// (C), humidity (%) and pressure (hPa), a rate of change per metric, a
// series silent after 3 expected intervals, a value stuck for 2 hours.
// Config overrides them per metric and per sensor (Rules).
package quality
