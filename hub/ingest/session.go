package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/freshet-iot/freshet/protocol"
)

// connectLoop keeps one broker session up until ctx ends.
func (p *Pipeline) connectLoop(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		err := p.session(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := min(100*time.Millisecond<<min(attempt, 8), 10*time.Second)
		attempt++
		p.log.Warn("broker session ended, reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (p *Pipeline) session(ctx context.Context) error {
	lost := make(chan error, 1)
	po := paho.NewClientOptions().AddBroker(p.o.Broker.URL).SetClientID(p.o.Broker.ClientID).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
		SetAutoAckDisabled(true).SetOrderMatters(false).
		SetKeepAlive(p.o.Broker.KeepAlive).SetConnectTimeout(10 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if p.o.Broker.Username != "" {
		po.SetUsername(p.o.Broker.Username).SetPassword(p.o.Broker.Password)
	}
	if p.o.Broker.TLS != nil {
		po.SetTLSConfig(p.o.Broker.TLS)
	}
	// The handler must never block paho's router (a blocked handler stalls
	// pings and acks, paho#208/#453): hand over, and if the queue is full
	// start a fresh session so the broker redelivers what was not taken.
	handler := func(c paho.Client, m paho.Message) {
		select {
		case p.in <- m:
		default:
			p.metrics.Overflows.Inc()
			select {
			case p.reconnect <- struct{}{}:
			default:
			}
		}
	}
	po.SetDefaultPublishHandler(handler)
	c := paho.NewClient(po)
	tok := c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return fmt.Errorf("connect %s: %v", p.o.Broker.URL, tok.Error())
	}
	defer c.Disconnect(250)
	prefix := ""
	if p.o.Broker.SharedGroup != "" {
		prefix = "$share/" + p.o.Broker.SharedGroup + "/"
	}
	sub := c.SubscribeMultiple(map[string]byte{
		prefix + p.o.Topics.Filter(protocol.TopicBatch): 1,
		p.o.Topics.Filter(protocol.TopicStatus):         1,
	}, handler)
	if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
		return fmt.Errorf("subscribe: %v", sub.Error())
	}
	p.client.Store(&c)
	p.connected.Store(true)
	defer p.connected.Store(false)
	p.log.Info("consuming", "broker", p.o.Broker.URL, "client_id", p.o.Broker.ClientID)
	select {
	case <-ctx.Done():
		return nil
	case err := <-lost:
		return err
	case <-p.reconnect:
		return errors.New("intake queue full: reconnecting so the broker redelivers")
	}
}
