package fleet

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/freshet-iot/freshet/agent/sensor"
	"github.com/freshet-iot/freshet/firmware-sim/modbus"
	"github.com/freshet-iot/freshet/firmware-sim/opcua"
	"github.com/freshet-iot/freshet/internal/cfgfile"
)

// FieldMetrics are the metrics a field gateway's devices report, besides
// temperature (which the soil probe and the PLC report too).
var FieldMetrics = []string{"voltage", "power", "energy", "moisture", "bottles"}

// Field is a gateway's field devices: an Eastron SDM120 energy meter over
// Modbus TCP, a soil probe over Modbus RTU (a pseudo-terminal), and a
// filling line's PLC over OPC UA. The PLC runs always; the agent reads it
// when it is built with OPC UA (-tags opcua, sensor.OPCUASupported).
type Field struct {
	Meter *modbus.Meter
	Probe *modbus.SoilProbe
	PLC   *opcua.PLC
	TCP   *modbus.TCPServer
	RTU   *modbus.RTUPort

	load, moisture float64
	bottles        uint32
}

// startField starts the devices and returns them with the sensors that read them.
func startField(r *rand.Rand, interval time.Duration) (*Field, []sensor.Config, error) {
	f := &Field{Meter: modbus.NewMeter(), Probe: modbus.NewSoilProbe(), load: 2 + 6*r.Float64(), moisture: 20 + 15*r.Float64()}
	var err error
	if f.TCP, err = modbus.ListenTCP("127.0.0.1:0", map[byte]*modbus.Slave{1: f.Meter.Slave}); err != nil {
		return nil, nil, err
	}
	if f.RTU, err = modbus.ListenRTUPTY(map[byte]*modbus.Slave{2: f.Probe.Slave}); err != nil {
		f.Close()
		return nil, nil, err
	}
	if f.PLC, err = opcua.StartPLC(); err != nil {
		f.Close()
		return nil, nil, err
	}
	f.update(time.Now(), r)
	dur := func(t time.Duration) cfgfile.Duration { return cfgfile.Duration(t) }
	ip := func(i int) *int { return &i }
	tenth := 0.1
	// Modbus and OPC UA reads go no faster than every 500 ms.
	iv := dur(max(interval, 500*time.Millisecond))
	sensors := []sensor.Config{
		{Name: "meter", Type: sensor.TypeModbus, Interval: iv, Modbus: &sensor.ModbusConfig{
			Endpoint: f.TCP.Addr, Registers: []sensor.ModbusRegister{
				{Metric: "voltage", Unit: "V", Kind: sensor.KindInput, Address: ip(int(modbus.SDM120Voltage)), Type: "float32"},
				{Metric: "power", Unit: "W", Kind: sensor.KindInput, Address: ip(int(modbus.SDM120ActivePower)), Type: "float32"},
				{Metric: "energy", Unit: "kWh", Kind: sensor.KindInput, Address: ip(int(modbus.SDM120ImportActiveEnergy)), Type: "float32"},
			}}},
		{Name: "soil", Type: sensor.TypeModbus, Interval: iv, Modbus: &sensor.ModbusConfig{
			Transport: sensor.ModbusRTU, Device: f.RTU.Path, Baud: 19200, Unit: ip(2), RequestTimeout: dur(300 * time.Millisecond),
			Registers: []sensor.ModbusRegister{
				{Metric: "moisture", Unit: "%", Address: ip(int(modbus.SoilMoisture)), Type: "int16", Scale: &tenth},
				{Metric: "temperature", Unit: "C", Address: ip(int(modbus.SoilTemperature)), Type: "int16", Scale: &tenth},
			}}},
	}
	if sensor.OPCUASupported {
		sensors = append(sensors, sensor.Config{Name: "line1", Type: sensor.TypeOPCUA, Interval: iv, OPCUA: &sensor.OPCUAConfig{
			Endpoint: f.PLC.URL, RequestTimeout: dur(400 * time.Millisecond), Nodes: []sensor.OPCUANode{
				{Node: opcua.NodeID(opcua.Temperature), Metric: "temperature", Unit: "C", Resolution: 0.01},
				{Node: opcua.NodeID(opcua.Count), Metric: "bottles"},
			}}})
	}
	return f, sensors, nil
}

// update sets the devices to their process at t: a household load with a
// daily cycle, soil drying slowly, a filling line counting bottles.
func (f *Field) update(t time.Time, r *rand.Rand) {
	day := float64(t.Unix()%86400) / 86400
	amps := max(0.1, f.load*(1+0.5*math.Sin(2*math.Pi*day))+0.2*r.NormFloat64())
	f.Meter.Set(230+2*r.NormFloat64(), amps, 0.93, 50+0.02*r.NormFloat64(), t)
	f.moisture = max(5, f.moisture-0.001+0.05*r.NormFloat64())
	f.Probe.Set(f.moisture, 12+4*math.Sin(2*math.Pi*day)+0.1*r.NormFloat64(), 300)
	f.bottles += uint32(1 + r.IntN(3))
	f.PLC.Set(opcua.Temperature, math.Round((63+0.5*r.NormFloat64())*100)/100, t)
	f.PLC.Set(opcua.Count, f.bottles, t)
}

// Close stops the devices' servers.
func (f *Field) Close() error {
	var errs []error
	if f.TCP != nil {
		errs = append(errs, f.TCP.Stop())
	}
	if f.RTU != nil {
		errs = append(errs, f.RTU.Close())
	}
	if f.PLC != nil {
		errs = append(errs, f.PLC.Stop())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("field devices: %w", err)
	}
	return nil
}
