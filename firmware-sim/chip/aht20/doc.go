// Package aht20 emulates an Aosong AHT20 temperature and humidity sensor at
// its I²C command level, on a chip.Bus, so that the unmodified
// periph.io/x/devices/v3/aht20 driver reads it.
//
// Reference: Aosong (Guangzhou Aosong Electronic), "AHT20 Product Manual"
// (datasheet), section 5.3 "Sensor reading process" (commands 0x71 status,
// 0xBE initialize, 0xAC trigger measurement, 0xBA soft reset; a 7-byte
// result of status, 20-bit humidity, 20-bit temperature and CRC-8) and
// section 6 "Signal transformation" (RH = S_RH/2^20 × 100 %, T = S_T/2^20 ×
// 200 − 50 °C).
//
// A measurement takes 80 ms, during which the status busy bit is set and
// reads return the previous result. The driver reads back the programmed
// values within one ADC step: 0.0002 °C and 0.0001 %RH.
package aht20
