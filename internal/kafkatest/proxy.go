// Package kafkatest holds test tooling that speaks the Kafka protocol.
//
// Proxy sits between clients and one real broker (kfake) and lets a test
// change what the broker answers: a broker error after the work was done,
// an answer that never comes. It is how the runtime's tests provoke what a
// real cluster does and the in-process broker, which answers at once and
// always the same way, never shows.
package kafkatest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Hook may change a response before the client sees it; req is the
// request it answers. It runs on the connection's goroutine.
type Hook func(req kmsg.Request, resp kmsg.Response)

// Proxy forwards Kafka connections on a loopback port to one broker,
// rewriting the broker's advertised address to its own so that clients
// keep talking through it.
type Proxy struct {
	ln     net.Listener
	broker string
	host   string
	port   int32

	mu    sync.Mutex
	hooks map[int16]Hook
	holds map[int16]func() bool
	conns map[net.Conn]bool
	done  bool
	wg    sync.WaitGroup
}

// NewProxy listens on 127.0.0.1 and forwards to broker (host:port).
func NewProxy(broker string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().(*net.TCPAddr)
	p := &Proxy{ln: ln, broker: broker, host: "127.0.0.1", port: int32(addr.Port), hooks: map[int16]Hook{}, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return net.JoinHostPort(p.host, strconv.Itoa(int(p.port))) }

// SetHook installs (or, with nil, removes) the hook for one request key.
func (p *Proxy) SetHook(key kmsg.Key, h Hook) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h == nil {
		delete(p.hooks, int16(key))
	} else {
		p.hooks[int16(key)] = h
	}
}

// Silence swallows requests of key while silent returns true: the broker
// never sees them and never answers, as a broker that stopped responding;
// the client times the request out. Nil removes it.
func (p *Proxy) Silence(key kmsg.Key, silent func() bool) {
	hold := silent
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holds == nil {
		p.holds = map[int16]func() bool{}
	}
	if hold == nil {
		delete(p.holds, int16(key))
	} else {
		p.holds[int16(key)] = hold
	}
}

func (p *Proxy) holding(key int16) bool {
	p.mu.Lock()
	hold, done := p.holds[key], p.done
	p.mu.Unlock()
	return !done && hold != nil && hold()
}

// Close stops accepting, closes every connection and waits for them.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.done = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		broker, err := net.Dial("tcp", p.broker)
		if err != nil {
			client.Close()
			continue
		}
		if !p.track(client) || !p.track(broker) {
			client.Close()
			broker.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(client, broker)
		}()
	}
}

type pending struct {
	key, version int16
	req          kmsg.Request // decoded only when a hook or a rewrite needs it
}

// serve forwards one connection. Requests go through as they are;
// responses the proxy must rewrite or a hook wants are decoded and encoded
// again.
func (p *Proxy) serve(client, broker net.Conn) {
	defer client.Close()
	defer broker.Close()
	var mu sync.Mutex
	inflight := map[int32]pending{}
	go func() {
		defer broker.Close()
		for {
			frame, err := readFrame(client)
			if err != nil {
				return
			}
			if len(frame) < 8 {
				return
			}
			key := int16(binary.BigEndian.Uint16(frame[0:]))
			version := int16(binary.BigEndian.Uint16(frame[2:]))
			corr := int32(binary.BigEndian.Uint32(frame[4:]))
			pd := pending{key: key, version: version}
			if p.holding(key) {
				continue // swallowed: no answer will come
			}
			if p.hook(key) != nil {
				pd.req = decodeRequest(frame, key, version)
			}
			mu.Lock()
			inflight[corr] = pd
			mu.Unlock()
			if err := writeFrame(broker, frame); err != nil {
				return
			}
		}
	}()
	for {
		frame, err := readFrame(broker)
		if err != nil || len(frame) < 4 {
			return
		}
		corr := int32(binary.BigEndian.Uint32(frame))
		mu.Lock()
		pd, ok := inflight[corr]
		delete(inflight, corr)
		mu.Unlock()
		if ok {
			frame = p.rewrite(frame, pd)
		}
		if err := writeFrame(client, frame); err != nil {
			return
		}
	}
}

func (p *Proxy) hook(key int16) Hook {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hooks[key]
}

func (p *Proxy) rewrite(frame []byte, pd pending) []byte {
	hook := p.hook(pd.key)
	if hook == nil && pd.key != int16(kmsg.Metadata) && pd.key != int16(kmsg.FindCoordinator) {
		return frame
	}
	resp := kmsg.ResponseForKey(pd.key)
	if resp == nil {
		return frame
	}
	resp.SetVersion(pd.version)
	header := 4
	if resp.IsFlexible() && pd.key != int16(kmsg.ApiVersions) {
		header = 5 // correlation id and an empty tagged-field section
	}
	if len(frame) < header || resp.ReadFrom(frame[header:]) != nil {
		return frame
	}
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			r.Brokers[i].Host, r.Brokers[i].Port = p.host, p.port
		}
	case *kmsg.FindCoordinatorResponse:
		r.Host, r.Port = p.host, p.port
		for i := range r.Coordinators {
			r.Coordinators[i].Host, r.Coordinators[i].Port = p.host, p.port
		}
	}
	if hook != nil && pd.req != nil {
		hook(pd.req, resp)
	}
	return resp.AppendTo(append([]byte(nil), frame[:header]...))
}

func decodeRequest(frame []byte, key, version int16) kmsg.Request {
	req := kmsg.RequestForKey(key)
	if req == nil {
		return nil
	}
	req.SetVersion(version)
	// Header: key, version, correlation id, client id (nullable string),
	// then a tagged-field section when the request is flexible.
	off := 8
	if len(frame) < off+2 {
		return nil
	}
	if n := int16(binary.BigEndian.Uint16(frame[off:])); n > 0 {
		off += int(n)
	}
	off += 2
	if req.IsFlexible() {
		off++ // empty tagged fields, as franz-go writes them
	}
	if off > len(frame) || req.ReadFrom(frame[off:]) != nil {
		return nil
	}
	return req
}

func readFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > 1<<30 {
		return nil, errors.New("frame too large")
	}
	frame := make([]byte, n)
	if _, err := io.ReadFull(r, frame); err != nil {
		return nil, err
	}
	return frame, nil
}

func writeFrame(w io.Writer, frame []byte) error {
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(frame)), uint32(len(frame)))
	if _, err := w.Write(append(buf, frame...)); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}
