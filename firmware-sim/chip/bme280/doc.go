// Package bme280 emulates a Bosch BME280 (or BMP280) combined temperature,
// pressure and humidity sensor at the register level, on a chip.Bus, so that
// the unmodified periph.io/x/devices/v3/bmxx80 driver reads it.
//
// Reference: Bosch Sensortec, "BME280 Combined humidity and pressure
// sensor", datasheet BST-BME280-DS002, section 4.2.3 "Compensation formulas"
// (32-bit temperature and humidity, 64-bit pressure), section 4.2.2
// "Trimming parameter readout", section 5 "Global memory map and register
// description" and appendix 9.1 "Measurement time". The BMP280 mode follows
// BST-BMP280-DS001, which shares the temperature and pressure part.
//
// The chip holds programmed physical values (Set). When it converts, it
// inverts the datasheet's integer compensation: it binary-searches the raw
// ADC code whose compensated value is nearest the programmed one, at the
// resolution the oversampling and filter settings give (temperature first,
// because its t_fine feeds pressure and humidity). A driver applying the
// datasheet compensation to the calibration registers therefore reads back
// the programmed values to within one ADC step:
//
//   - temperature: the nearest 0.01 °C (the compensation's output unit);
//   - pressure: within 1.6 Pa at 1x oversampling (16-bit results), 0.4 Pa
//     at 4x (18-bit) and 0.1 Pa at 16x or with the IIR filter on (20-bit);
//   - humidity: within 0.01 %RH.
//
// Values beyond what the ADC can encode saturate at the nearest reading it
// can give.
//
// Not emulated: the IIR filter's slow convergence (readings are those of a
// settled filter), the SPI interface, and the standby timing of normal mode
// (in normal mode every burst read of the data registers sees a fresh
// conversion).
package bme280
