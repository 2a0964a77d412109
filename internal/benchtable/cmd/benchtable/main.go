// Command benchtable runs freshet's benchmarks and prints one Markdown table
// of figures against their goals (`make bench`). Run it from the module root.
//
//	benchtable [-out raw.txt] [-ldflags '-s -w ...'] [-go go]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/freshet-iot/freshet/internal/benchtable"
)

func main() {
	out := flag.String("out", "", "also write the raw benchmark output to this file (for benchstat)")
	ldflags := flag.String("ldflags", "-s -w", "linker flags of the agent binary whose size is measured")
	goCmd := flag.String("go", "go", "the go command")
	flag.Parse()
	if err := run(*out, benchtable.Options{Go: *goCmd, LDFlags: *ldflags, Log: os.Stderr}); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(out string, o benchtable.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		o.Raw = f
	}
	return benchtable.Run(ctx, os.Stdout, o)
}
