package modbus

import (
	"math"
	"sync"
	"time"
)

// SDM120 input registers (Eastron SDM120-Modbus protocol, float32, high word first).
const (
	SDM120Voltage              uint16 = 0x0000 // V
	SDM120Current              uint16 = 0x0006 // A
	SDM120ActivePower          uint16 = 0x000c // W
	SDM120ApparentPower        uint16 = 0x0012 // VA
	SDM120ReactivePower        uint16 = 0x0018 // VAr
	SDM120PowerFactor          uint16 = 0x001e // 1
	SDM120Frequency            uint16 = 0x0046 // Hz
	SDM120ImportActiveEnergy   uint16 = 0x0048 // kWh
	SDM120ExportActiveEnergy   uint16 = 0x004a // kWh
	SDM120TotalActiveEnergy    uint16 = 0x0156 // kWh
	SDM120TotalReactiveEnergy  uint16 = 0x0158 // kVArh
	sdm120InputEnd                    = 0x015a
	sdm120DefaultVoltage              = 230.0
	sdm120DefaultFrequency            = 50.0
	sdm120DefaultPowerFactor          = 0.95
	sdm120InitialImportKWh            = 1234.5
	sdm120InitialReactiveKVArh        = 210.25
)

// Meter is an emulated Eastron SDM120-Modbus energy meter. Its energy
// counters integrate the active power over the time between two Sets and
// only grow.
type Meter struct {
	*Slave
	mu                       sync.Mutex
	at                       time.Time
	power, reactive          float64 // W, VAr at the last Set
	importKWh, reactiveKVArh float64
}

// NewMeter returns a meter reading 230 V, 0 A, 50 Hz, with 1234.5 kWh on
// its counter.
func NewMeter() *Meter {
	m := &Meter{Slave: NewSlave(), importKWh: sdm120InitialImportKWh, reactiveKVArh: sdm120InitialReactiveKVArh}
	m.Span(ReadInputRegisters, 0, sdm120InputEnd)
	m.Set(sdm120DefaultVoltage, 0, sdm120DefaultPowerFactor, sdm120DefaultFrequency, time.Time{})
	return m
}

// Set programs the meter's instantaneous values at time at: volts, amps,
// power factor and frequency. The energy used since the previous Set (at
// the previous power) is added to the counters first; a time before the
// previous one adds nothing.
func (m *Meter) Set(volts, amps, pf, hz float64, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.at.IsZero() && at.After(m.at) {
		h := at.Sub(m.at).Hours()
		m.importKWh += m.power * h / 1000
		m.reactiveKVArh += math.Abs(m.reactive) * h / 1000
	}
	if m.at.IsZero() || at.After(m.at) {
		m.at = at
	}
	apparent := volts * amps
	m.power = apparent * pf
	m.reactive = math.Sqrt(max(0, apparent*apparent-m.power*m.power))
	for _, r := range []struct {
		addr uint16
		v    float64
	}{
		{SDM120Voltage, volts}, {SDM120Current, amps}, {SDM120ActivePower, m.power},
		{SDM120ApparentPower, apparent}, {SDM120ReactivePower, m.reactive}, {SDM120PowerFactor, pf},
		{SDM120Frequency, hz}, {SDM120ImportActiveEnergy, m.importKWh}, {SDM120ExportActiveEnergy, 0},
		{SDM120TotalActiveEnergy, m.importKWh}, {SDM120TotalReactiveEnergy, m.reactiveKVArh},
	} {
		m.SetFloat32(ReadInputRegisters, r.addr, float32(r.v))
	}
}

// ImportKWh returns the import energy counter.
func (m *Meter) ImportKWh() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.importKWh
}

// Soil probe holding registers (int16).
const (
	SoilMoisture     uint16 = 0 // 0.1 %
	SoilTemperature  uint16 = 1 // 0.1 °C, signed
	SoilConductivity uint16 = 2 // µS/cm
)

// SoilProbe is an emulated RS-485 soil probe: moisture, temperature and
// conductivity in scaled int16 holding registers 0..2.
type SoilProbe struct {
	*Slave
}

// NewSoilProbe returns a probe reading 25 % moisture at 15 °C, 300 µS/cm.
func NewSoilProbe() *SoilProbe {
	p := &SoilProbe{Slave: NewSlave()}
	p.Span(ReadHoldingRegisters, 0, 3)
	p.Set(25, 15, 300)
	return p
}

// Set programs moisture (%), temperature (°C) and conductivity (µS/cm),
// rounded to the probe's steps.
func (p *SoilProbe) Set(moisture, celsius, conductivity float64) {
	p.SetRegister(ReadHoldingRegisters, SoilMoisture, uint16(int16(math.Round(moisture*10))))
	p.SetRegister(ReadHoldingRegisters, SoilTemperature, uint16(int16(math.Round(celsius*10))))
	p.SetRegister(ReadHoldingRegisters, SoilConductivity, uint16(math.Round(conductivity)))
}
