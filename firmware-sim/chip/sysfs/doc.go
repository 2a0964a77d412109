// Package sysfs fakes the Linux sysfs files the agent reads for sensors that
// are not on I²C, under a root directory a test chooses (t.TempDir()), laid
// out as on Raspberry Pi OS:
//
//   - DS18B20 1-wire probes as the w1_therm driver exposes them:
//     sys/bus/w1/devices/28-<serial>/w1_slave and .../temperature;
//   - the CPU temperature: sys/class/thermal/thermal_zone<N>/temp.
//
// Files are replaced atomically (written aside, then renamed), so a reader
// never sees a partial update.
package sysfs
