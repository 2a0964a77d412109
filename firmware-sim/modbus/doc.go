// Package modbus emulates Modbus slaves at the wire level, so the agent's
// real Modbus code (github.com/simonvetter/modbus underneath) reads them as
// it reads field devices.
//
// A Slave is a device's data model: its four tables (coils, discrete
// inputs, holding and input registers) and a Fault. Two devices are built on
// it:
//
//   - Meter, an Eastron SDM120-Modbus single-phase energy meter, after
//     Eastron's "SDM120-Modbus protocol" register map: IEEE 754 float32 input
//     registers, high word first, at their real addresses (voltage 0x0000,
//     current 0x0006, active power 0x000C, apparent power 0x0012, reactive
//     power 0x0018, power factor 0x001E, frequency 0x0046, import active
//     energy 0x0048, export active energy 0x004A, total active energy
//     0x0156, total reactive energy 0x0158). Like the real meter, reading
//     an unlisted register inside the map (0x0000..0x0159) gives 0, so
//     readers may span the gaps. The energy counters only grow.
//   - SoilProbe, an RS-485 soil moisture, temperature and conductivity probe
//     in the layout the common "3-in-1" probes use (JXCT and Renke sell
//     them): holding register 0 moisture in 0.1 %, 1 temperature in 0.1 °C
//     (int16, negative below zero), 2 conductivity in µS/cm.
//
// Three servers put slaves on a wire:
//
//   - TCPServer: Modbus TCP through the library's own server. It answers
//     for several unit ids the way a TCP-to-RTU gateway does: exception
//     0x0B (gateway target failed to respond) for a silent slave, 0x0A for a
//     unit it does not know.
//   - RTUServer on a pseudo-terminal pair (OpenPTY): the emulator implements
//     the RTU slave side itself: frames delimited by length and by the
//     inter-frame silence, CRC-16/Modbus checked and sent, several slaves on
//     one line, a frame for another unit ignored as on a real RS-485 bus.
//   - RTUServer behind a TCP listener (ListenRTUOverTCP): RTU frames over
//     TCP, as an RS-485-to-Ethernet serial server forwards them.
//
// Faults (Slave.SetFault): exception responses, a slave that stops
// answering, garbled responses (a bad CRC), and, for TCPServer, a restart.
package modbus
