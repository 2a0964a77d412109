//go:build failpoint

package main

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// failpoint turns FRESHET_HUB_FAILPOINT=step:n into a hook that kills the
// process (as kill -9 would) the n-th time the pipeline reaches step. Only
// crash tests build it: `go build -tags failpoint`.
func failpoint() func(string) {
	step, nStr, ok := strings.Cut(os.Getenv("FRESHET_HUB_FAILPOINT"), ":")
	n, err := strconv.Atoi(nStr)
	if !ok || err != nil || n < 1 {
		return nil
	}
	var hits atomic.Int64
	return func(s string) {
		if s == step && hits.Add(1) == int64(n) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}
