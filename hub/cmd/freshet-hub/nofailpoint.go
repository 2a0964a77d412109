//go:build !failpoint

package main

// failpoint is nil in the binary we ship: crash tests build with -tags
// failpoint (failpoint.go).
func failpoint() func(string) { return nil }
