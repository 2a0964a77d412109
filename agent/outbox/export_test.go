package outbox

import bolt "go.etcd.io/bbolt"

// crash closes the file without marking a clean shutdown, as kill -9 would
// leave it (bbolt's own writes are atomic, so this is what a crash looks like).
func (ob *Outbox) crash() {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	ob.closed = true
	ob.db.Close()
}

var Crash = (*Outbox).crash

// Published returns the durable publish watermark.
func (ob *Outbox) Published() uint64 {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.st.published
}

// FailNextTx makes the next write transaction of Commit fail at its end
// with err and roll back.
func FailNextTx(ob *Outbox, err error) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	ob.failTx = err
}

// FailAfterNextTx makes the next Commit transaction that succeeds return
// err, as a failed fsync after bbolt wrote the meta page would.
func FailAfterNextTx(ob *Outbox, err error) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	ob.failAfter = err
}

// TxID returns the id of the last transaction bbolt committed.
func TxID(ob *Outbox) int {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	id := 0
	ob.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return id
}

// SetPageSize sets the bbolt page size of a new file.
func SetPageSize(o *Options, n int) { o.pageSize = n }

// FilePageSize is the page size of the open bbolt file.
func FilePageSize(ob *Outbox) int {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.db.Info().PageSize
}
