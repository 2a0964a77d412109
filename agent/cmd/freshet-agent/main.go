// Command freshet-agent: see README.md.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/freshet-iot/freshet/internal/version"
)

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version.String("freshet-agent"))
		return
	}
	fmt.Fprintln(os.Stderr, "freshet-agent: not implemented yet; this build only answers -version")
	os.Exit(2)
}
