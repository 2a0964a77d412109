package modbus

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Frames from the Modbus over Serial Line specification and from an SDM120
// read (unit 1, input registers 0..1): the CRC goes low byte first.
func TestCRC16(t *testing.T) {
	for _, tc := range []struct {
		frame []byte
		crc   uint16
	}{
		{[]byte{0x01, 0x04, 0x00, 0x00, 0x00, 0x02}, 0xcb71}, // sent as 71 cb
		{[]byte{0x02, 0x07}, 0x1241},                         // spec, 6.2.2 example: 41 12
	} {
		if got := CRC16(tc.frame); got != tc.crc {
			t.Errorf("CRC16(% x) = %04x, want %04x", tc.frame, got, tc.crc)
		}
	}
	if f := EncodeRequest(1, ReadInputRegisters, 0, 2); !bytes.Equal(f, []byte{0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xcb}) {
		t.Errorf("EncodeRequest = % x", f)
	}
}

func TestDecodeRequest(t *testing.T) {
	good := EncodeRequest(7, ReadHoldingRegisters, 0x10, 3)
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	for _, tc := range []struct {
		name  string
		frame []byte
		want  Request
		err   error
	}{
		{"read holding", good, Request{Unit: 7, Function: 3, Addr: 0x10, Count: 3}, nil},
		{"bad crc", bad, Request{}, ErrBadCRC},
		{"short", []byte{1, 3, 0}, Request{}, ErrShortFrame},
		{"long", make([]byte, 300), Request{}, ErrLongFrame},
		{"length mismatch", appendCRC([]byte{1, 3, 0, 0, 0}), Request{}, ErrBadLength},
		{"unsupported function", appendCRC([]byte{1, 0x2b, 0x0e, 0x01, 0x00}), Request{Unit: 1, Function: 0x2b, Exception: IllegalFunction}, nil},
		{"past the address space", EncodeRequest(1, 4, 0xfffe, 4), Request{Unit: 1, Function: 4, Addr: 0xfffe, Count: 4, Exception: IllegalDataAddress}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeRequest(tc.frame)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestFramer(t *testing.T) {
	a, b := EncodeRequest(1, 4, 0, 2), EncodeRequest(2, 3, 0, 3)
	var f framer
	// Two frames back to back, split at odd places, then a torn one.
	stream := append(append(bytes.Clone(a), b...), 0x01, 0x04)
	var got [][]byte
	for _, chunk := range [][]byte{stream[:3], stream[3:11], stream[11:]} {
		got = append(got, f.push(chunk)...)
	}
	if len(got) != 2 || !bytes.Equal(got[0], a) || !bytes.Equal(got[1], b) {
		t.Fatalf("frames % x", got)
	}
	if rest := f.silence(); !bytes.Equal(rest, []byte{0x01, 0x04}) {
		t.Fatalf("torn frame at the silence: % x", rest)
	}
	if f.silence() != nil {
		t.Fatal("a second silence returned a frame")
	}
}

// TestRTUServerOnPTY speaks raw frames to two slaves on one pseudo-terminal:
// answers, an exception, another unit's frame ignored, a garbled response.
func TestRTUServerOnPTY(t *testing.T) {
	meter, probe := NewMeter(), NewSoilProbe()
	port, err := ListenRTUPTY(map[byte]*Slave{1: meter.Slave, 2: probe.Slave})
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	f, err := os.OpenFile(port.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ask := func(req []byte, want int) []byte {
		t.Helper()
		if _, err := f.Write(req); err != nil {
			t.Fatal(err)
		}
		if want == 0 {
			return nil
		}
		resp := make([]byte, want)
		f.SetReadDeadline(time.Now().Add(5 * time.Second))
		for n := 0; n < want; {
			m, err := f.Read(resp[n:])
			if err != nil {
				t.Fatalf("after % x: %v", resp[:n], err)
			}
			n += m
		}
		return resp
	}
	// The probe: 25.0 %, 15.0 °C, 300 µS/cm.
	resp := ask(EncodeRequest(2, ReadHoldingRegisters, 0, 3), 11)
	if want := appendCRC([]byte{2, 3, 6, 0, 250, 0, 150, 1, 44}); !bytes.Equal(resp, want) {
		t.Fatalf("probe answered % x, want % x", resp, want)
	}
	// A register the probe does not have.
	resp = ask(EncodeRequest(2, ReadHoldingRegisters, 3, 1), 5)
	if want := appendCRC([]byte{2, 0x83, IllegalDataAddress}); !bytes.Equal(resp, want) {
		t.Fatalf("probe answered % x, want exception 2", resp)
	}
	// A frame for unit 9 is nobody's: no answer; the meter answers the next.
	ask(EncodeRequest(9, ReadInputRegisters, 0, 2), 0)
	resp = ask(EncodeRequest(1, ReadInputRegisters, SDM120Voltage, 2), 9)
	if want := appendCRC([]byte{1, 4, 4, 0x43, 0x66, 0, 0}); !bytes.Equal(resp, want) { // 230.0 V
		t.Fatalf("meter answered % x, want % x", resp, want)
	}
	meter.SetFault(Fault{Garble: true})
	resp = ask(EncodeRequest(1, ReadInputRegisters, SDM120Voltage, 2), 9)
	if _, err := DecodeRequest(resp); !errors.Is(err, ErrBadCRC) {
		t.Fatalf("garbled response % x passed its CRC", resp)
	}
}

// FuzzDecodeRequest: any bytes decode or fail with a named error, never
// panic; a decoded read re-encodes to the same frame.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(EncodeRequest(1, 4, 0, 2))
	f.Add(EncodeRequest(247, 1, 0xffff, 2000))
	f.Add(appendCRC([]byte{1, 0x10, 0, 0, 0, 1, 2, 0, 1}))
	f.Add([]byte{1, 3})
	f.Fuzz(func(t *testing.T, frame []byte) {
		r, err := DecodeRequest(frame)
		if err != nil {
			for _, e := range []error{ErrShortFrame, ErrLongFrame, ErrBadCRC, ErrBadLength} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("unnamed error %v", err)
		}
		if r.Function >= 1 && r.Function <= 4 {
			if again := EncodeRequest(r.Unit, r.Function, r.Addr, r.Count); !bytes.Equal(again, frame) {
				t.Fatalf("% x decoded to %+v, which encodes to % x", frame, r, again)
			}
		}
	})
}

// FuzzFramer: the frames cut from any stream, in any chunks, hold exactly
// the stream's bytes in order, each at most 256 bytes plus a chunk.
func FuzzFramer(f *testing.F) {
	f.Add(append(EncodeRequest(1, 4, 0, 2), EncodeRequest(2, 3, 1, 1)...), uint8(3))
	f.Add([]byte{1, 0x10, 0, 0, 0, 1, 255, 1, 2, 3}, uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		var fr framer
		var out []byte
		step := int(chunk)%32 + 1
		for i := 0; i < len(stream); i += step {
			for _, frame := range fr.push(stream[i:min(i+step, len(stream))]) {
				if len(frame) == 0 || len(frame) > maxRTUFrame+step {
					t.Fatalf("frame of %d bytes", len(frame))
				}
				out = append(out, frame...)
			}
		}
		out = append(out, fr.silence()...)
		if !bytes.Equal(out, stream) {
			t.Fatalf("frames hold % x, stream was % x", out, stream)
		}
	})
}
