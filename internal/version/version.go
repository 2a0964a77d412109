// Package version holds the build's version and commit, stamped by the
// Makefile with -ldflags "-X ...". Unstamped builds say "dev".
package version

import (
	"fmt"
	"runtime"
)

// Stamped at link time; never assigned in code.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String describes the build for -version output.
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", program, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
