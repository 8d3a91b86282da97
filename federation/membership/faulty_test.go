package membership

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestFaultyTransport(t *testing.T) {
	log := testLogger()
	na, err := NewNetTransport("127.0.0.1", 0, log)
	if err != nil {
		t.Fatal(err)
	}
	ft := NewFaultyTransport(na)
	defer ft.Shutdown()
	b, err := NewNetTransport("127.0.0.1", 0, log)
	if err != nil {
		t.Fatal(err)
	}
	// NetTransport hands accepted connections to an unbuffered channel
	// and cannot shut down while one is waiting there: drain it.
	drained := make(chan struct{})
	go func() {
		for {
			select {
			case c := <-b.StreamCh():
				c.Close()
			case <-drained:
				return
			}
		}
	}()
	defer func() {
		b.Shutdown()
		close(drained)
	}()
	ipA, portA, _ := ft.FinalAdvertiseAddr("", 0)
	ipB, portB, _ := b.FinalAdvertiseAddr("", 0)
	addrA := fmt.Sprintf("%s:%d", ipA, portA)
	addrB := fmt.Sprintf("%s:%d", ipB, portB)

	recv := func(ch <-chan *memberlist.Packet, want []byte) error {
		select {
		case p := <-ch:
			if !bytes.Equal(p.Buf, want) {
				return fmt.Errorf("got %q, want %q", p.Buf, want)
			}
			return nil
		case <-time.After(5 * time.Second):
			return fmt.Errorf("no packet %q", want)
		}
	}

	// Open: both directions, and streams.
	if _, err := ft.WriteTo([]byte("a1"), addrB); err != nil {
		t.Fatal(err)
	}
	if err := recv(b.PacketCh(), []byte("a1")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteTo([]byte("b1"), addrA); err != nil {
		t.Fatal(err)
	}
	if err := recv(ft.PacketCh(), []byte("b1")); err != nil {
		t.Fatal(err)
	}
	conn, err := ft.DialTimeout(addrB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}

	// Blocked: packets dropped both ways, dials refused, open streams fail.
	ft.Block(addrB)
	if _, err := ft.WriteTo([]byte("a2"), addrB); err != nil {
		t.Fatal(err)
	}
	if _, err := b.WriteTo([]byte("b2"), addrA); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "2 dropped packets", func() error {
		if p, _ := ft.Dropped(); p != 2 {
			return fmt.Errorf("dropped %d", p)
		}
		return nil
	})
	if _, err := ft.DialAddressTimeout(memberlist.Address{Addr: addrB, Name: "b"}, time.Second); err == nil {
		t.Fatal("dial to a blocked address succeeded")
	}
	if _, err := conn.Write([]byte("y")); err == nil {
		t.Fatal("write on a stream to a blocked address succeeded")
	}
	if _, d := ft.Dropped(); d != 1 {
		t.Fatalf("refused dials: %d", d)
	}

	// Healed: traffic flows again; nothing dropped earlier reappears.
	ft.Heal()
	if _, err := b.WriteTo([]byte("b3"), addrA); err != nil {
		t.Fatal(err)
	}
	if err := recv(ft.PacketCh(), []byte("b3")); err != nil {
		t.Fatal(err)
	}
	if _, err := ft.WriteTo([]byte("a3"), addrB); err != nil {
		t.Fatal(err)
	}
	if err := recv(b.PacketCh(), []byte("a3")); err != nil {
		t.Fatal(err)
	}
	c2, err := ft.DialTimeout(addrB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
}
