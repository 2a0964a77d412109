package outbox_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/freshet-iot/freshet/agent/outbox"
	"github.com/freshet-iot/freshet/internal/testsvc"
	"github.com/freshet-iot/freshet/protocol"
)

// diskFullEnv makes TestDiskFull's child run the scenario in the tmpfs
// mounted at the path it names.
const diskFullEnv = "FRESHET_TEST_DISKFULL_DIR"

// TestDiskFull fills a real, tiny filesystem (a 1 MB tmpfs in a user and
// mount namespace of its own: no root needed) under a running outbox,
// three times. The commits that hit ENOSPC fail and keep their readings
// queued; the hub's acks free the disk and committing resumes; closed while
// full, the outbox reports what it loses and opens again on the full disk.
// Every reading added is delivered exactly once, counted in a gap notice,
// or reported lost by Close.
func TestDiskFull(t *testing.T) {
	if dir := os.Getenv(diskFullEnv); dir != "" {
		diskFullScenario(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskFull$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), diskFullEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) { // it did not start: no user namespaces for us
		if testsvc.Required() {
			t.Fatalf("cannot start a process in a user namespace (needed for a private tmpfs): %v", err)
		}
		t.Skipf("no unprivileged user namespaces here (%v): the disk-full test needs one for its tmpfs", err)
	}
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("disk-full scenario failed: %v", err)
	}
}

func diskFullScenario(t *testing.T, dir string) {
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a 1 MB tmpfs on %s: %v", dir, err)
	}
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	o := outbox.Options{Path: filepath.Join(dir, "outbox.db"), Device: "gw-full", Now: clk.Now, MaxBatchAge: 10 * time.Second,
		MaxBytes:   64 << 20, // far above the disk: the disk is the bound here
		MaxPending: 3000}
	ob, err := outbox.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	added := 0
	add := func(n int) {
		rs := make([]protocol.Reading, n)
		for i := range rs {
			clk.Add(10 * time.Millisecond)
			rs[i] = protocol.Reading{Sensor: "s", Metric: "m", Type: protocol.Float, Time: clk.Now().UnixNano(), Float: float64(added % 1000)}
			added++
		}
		ob.Add(rs)
	}
	// The hub: it takes every sealed batch, checks no reading comes twice,
	// sums the gap notices, and acks.
	codec := protocol.NewCodec(protocol.Limits{})
	delivered := map[int64]bool{}
	var gapped uint64
	hub := func() {
		t.Helper()
		var through uint64
		for seq, data, ok, err := ob.Next(0); ok; seq, data, ok, err = ob.Next(seq) {
			if err != nil {
				t.Fatal(err)
			}
			var b protocol.Batch
			if err := codec.DecodeBatch(data, &b); err != nil {
				t.Fatalf("batch %d: %v", seq, err)
			}
			for _, s := range b.Series {
				for _, ts := range s.Times {
					if delivered[ts] {
						t.Fatalf("batch %d: reading at %d delivered twice", seq, ts)
					}
					delivered[ts] = true
				}
			}
			if b.Gap != nil {
				gapped += b.Gap.Readings
			}
			through = seq
		}
		if through > 0 {
			if err := ob.Ack(&protocol.Ack{Device: "gw-full", Epoch: ob.Epoch(), Through: through}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// fill commits until the disk is full, then goes on reading while it
	// is: commits fail (or squeeze into freed pages), readings wait in
	// memory up to MaxPending and the rest are counted.
	fill := func() {
		t.Helper()
		var full error
		for i := 0; i < 10000 && full == nil; i++ {
			add(500)
			full = ob.Commit()
		}
		if !errors.Is(full, syscall.ENOSPC) {
			t.Fatalf("the disk never filled: last commit error %v", full)
		}
		t.Logf("disk full at %d readings: %v; stats %+v", added, full, ob.Stats())
		failed := 0
		for range 20 {
			add(500)
			if ob.Commit() != nil {
				failed++
			}
		}
		t.Logf("while full, %d of 20 commits failed", failed)
	}
	// recover: the hub acks what was sealed; deleting it frees the disk
	// and committing resumes.
	recover := func() {
		t.Helper()
		hub()
		var err error
		for range 3 {
			if err = ob.Commit(); err == nil {
				return
			}
		}
		t.Fatalf("commits do not resume after the hub acked: %v", err)
	}
	fill()
	recover()
	fill() // full again: the file is at its size, and the freed pages are used first
	recover()
	if st := ob.Stats(); st.Dropped == 0 || st.CommitErrors == 0 {
		t.Fatalf("the scenario dropped nothing or never failed a commit: %+v", st)
	}
	// Full a third time, the agent stops: what could not be committed is
	// reported lost. It starts again on the full disk and recovers.
	fill()
	queued := ob.Stats().Pending
	lost := &outbox.LostError{}
	switch err := ob.Close(); {
	case errors.As(err, &lost):
		t.Logf("closed full, and could not even note them: %v", lost)
	case err != nil:
		t.Fatalf("Close on a full disk: %v", err)
	default:
		t.Logf("closed full: %d queued readings dropped and noted for the next gap notice", queued)
	}
	if ob, err = outbox.Open(o); err != nil {
		t.Fatalf("open on a full disk: %v", err)
	}
	defer ob.Close()
	recover()
	add(100)
	if err := ob.Commit(); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	if err := ob.Commit(); err != nil { // seals the rest
		t.Fatal(err)
	}
	hub()
	if err := ob.Commit(); err != nil { // deletes what the hub acked
		t.Fatal(err)
	}
	st := ob.Stats()
	t.Logf("at the end: %d added, %d delivered, %d in gap notices, %d lost at close; stats %+v", added, len(delivered), gapped, lost.Queued+lost.Unreported, st)
	if st.Backlog.Readings != 0 || st.Pending != 0 {
		t.Fatalf("readings left behind: %+v", st)
	}
	if len(delivered)+int(gapped)+int(lost.Queued+lost.Unreported) != added {
		t.Fatalf("%d readings added, %d delivered + %d in gap notices + %d lost at close", added, len(delivered), gapped, lost.Queued+lost.Unreported)
	}
	fmt.Println("ok")
}
