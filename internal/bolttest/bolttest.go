// Package bolttest opens bbolt files for tests and checks their
// consistency when the test ends, after the test's own cleanups (bbolt's
// internal/btesting is the model). It imports testing: only tests may use it.
package bolttest

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Open opens a new bbolt file in a temporary directory of tb (nil options:
// bbolt's defaults). When the test ends it runs tx.Check over the file and
// fails the test for each inconsistency, then closes it. Tests that close
// it themselves may; a closed file is not checked.
func Open(tb testing.TB, o *bolt.Options) *bolt.DB {
	tb.Helper()
	return OpenPath(tb, filepath.Join(tb.TempDir(), "test.db"), o)
}

// OpenPath is Open for a file at path (created if missing).
func OpenPath(tb testing.TB, path string, o *bolt.Options) *bolt.DB {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, o)
	if err != nil {
		tb.Fatalf("open bbolt %s: %v", path, err)
	}
	tb.Cleanup(func() { Check(tb, db); db.Close() })
	return db
}

// Check runs tx.Check over db and fails tb for each inconsistency. A
// closed db is not checked.
func Check(tb testing.TB, db *bolt.DB) {
	tb.Helper()
	err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			tb.Errorf("bbolt %s is inconsistent: %v", db.Path(), err)
		}
		return nil
	})
	if err != nil && !errors.Is(err, berrors.ErrDatabaseNotOpen) {
		tb.Errorf("check bbolt %s: %v", db.Path(), err)
	}
}
