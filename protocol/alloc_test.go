package protocol

import (
	"runtime"
	"testing"
)

// TestDecodeBoundsStringLengths sends map keys and op names whose str
// headers claim far more bytes than the frame holds. The decoder must
// refuse them without allocating what the header claims: a 6-byte frame
// must not make the daemon allocate 4 GiB.
func TestDecodeBoundsStringLengths(t *testing.T) {
	for name, payload := range map[string][]byte{
		"map key": {0x81, 0xdb, 0xff, 0xff, 0xff, 0xf0},
		"op name": {0x81, 0xa2, 'o', 'p', 0xdb, 0xff, 0xff, 0xff, 0xf0},
	} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var req Request
			err := NewDecoder().DecodeRequest(payload, &req)
			var resp Response
			resp.Op = OpHello
			rerr := NewDecoder().DecodeResponse(payload, &resp)
			runtime.ReadMemStats(&after)
			if err == nil || !IsMalformed(err) || rerr == nil {
				t.Fatalf("decode: got %v / %v, want malformed", err, rerr)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 { // msgpack itself may take 1 MiB to start a read
				t.Fatalf("decoding a %d-byte payload allocated %d bytes", len(payload), got)
			}
		})
	}
}
