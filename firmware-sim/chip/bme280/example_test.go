package bme280_test

import (
	"fmt"
	"log"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/freshet-iot/freshet/firmware-sim/chip"
	"github.com/freshet-iot/freshet/firmware-sim/chip/bme280"
)

// An emulated BME280 read by periph's unmodified driver.
func Example() {
	bus := chip.NewBus("I2C1")
	sensor, err := bme280.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Attach(0x76, sensor); err != nil {
		log.Fatal(err)
	}
	if err := sensor.Set(21.37, 45.5, 101325); err != nil {
		log.Fatal(err)
	}

	dev, err := bmxx80.NewI2C(bus, 0x76, &bmxx80.DefaultOpts)
	if err != nil {
		log.Fatal(err)
	}
	var e physic.Env
	if err := dev.Sense(&e); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %.2f °C %.1f %%RH %.0f Pa\n", dev,
		float64(e.Temperature-physic.ZeroCelsius)/float64(physic.Celsius),
		float64(e.Humidity)/float64(physic.PercentRH),
		float64(e.Pressure)/float64(physic.Pascal))

	sensor.SetFault(chip.NACK)
	fmt.Println("unplugged:", dev.Sense(&e) != nil)
	// Output:
	// BME280{I2C1(118)} 21.37 °C 45.5 %RH 101325 Pa
	// unplugged: true
}
