package hub_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/freshet-iot/freshet/internal/bolttest"

	"github.com/freshet-iot/freshet/hub"
)

// The data quality state is derived: an unreadable entry is started over,
// never a reason for the hub to refuse to start or to stop checking.
func TestUnreadableQualityStateIsStartedOver(t *testing.T) {
	dir := t.TempDir()
	db := bolttest.OpenPath(t, filepath.Join(dir, "hub.db"), &bolt.Options{Timeout: time.Second})
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("quality"))
		if err != nil {
			return err
		}
		b.Put([]byte("d\x00gw-1"), []byte("{not json"))
		return b.Put([]byte("s\x00gw-1\x00\x00\x00\x00\x01"), []byte{0xff})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FRESHET_TEST_QSTATE_TOKEN", "user:password")
	cfg, err := hub.ParseConfig(strings.NewReader(fmt.Sprintf(`
data_dir: %s
broker: {embedded: {listen: "127.0.0.1:0"}}
influx: {url: "http://127.0.0.1:1", bucket: x/autogen, token_env: FRESHET_TEST_QSTATE_TOKEN}
http: {listen: "off"}
insecure_unsigned_acks: true
`, dir)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(cfg, hub.Options{})
	if err != nil {
		t.Fatalf("hub refused to start over unreadable quality state: %v", err)
	}
	h.Close()
}
