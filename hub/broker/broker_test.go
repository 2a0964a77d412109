package broker_test

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/freshet-iot/freshet/hub/broker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCloseWhileClientsChurn closes the broker while clients connect and
// disconnect as fast as they can: with mochi's own listener Close this
// deadlocks now and then (mochi-mqtt#488); Close must always return.
func TestCloseWhileClientsChurn(t *testing.T) {
	for round := range 30 {
		b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).
						SetClientID(fmt.Sprintf("churn-%d-%d", w, i)).SetConnectTimeout(time.Second).SetAutoReconnect(false))
					if tok := c.Connect(); tok.WaitTimeout(time.Second) && tok.Error() == nil {
						c.Disconnect(0)
					}
				}
			}()
		}
		// Let some churn happen: wait until at least a few clients got through.
		deadline := time.Now().Add(5 * time.Second)
		for atomic.LoadInt64(&b.Server().Info.ClientsConnected)+atomic.LoadInt64(&b.Server().Info.ClientsDisconnected) < 3 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		done := make(chan struct{})
		go func() { b.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: Close did not return within 20s (deadlock)", round)
		}
		close(stop)
		wg.Wait()
		if c, err := net.DialTimeout("tcp", b.Addr(), time.Second); err == nil {
			c.Close()
			t.Fatalf("round %d: still accepting after Close", round)
		}
	}
}
