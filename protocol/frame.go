package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size of a frame's length prefix.
const HeaderSize = 4

// ReadFrameHeader reads a frame's length prefix and checks it against max.
// io.EOF means the stream ended cleanly between frames. From an
// io.ByteReader (a bufio.Reader) it reads byte by byte, which allocates
// nothing.
func ReadFrameHeader(r io.Reader, max int) (int, error) {
	var n uint32
	if br, ok := r.(io.ByteReader); ok {
		for i := range HeaderSize {
			c, err := br.ReadByte()
			if err != nil {
				if i > 0 && errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return 0, headerError(err)
			}
			n = n<<8 | uint32(c)
		}
	} else {
		hdr := make([]byte, HeaderSize)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return 0, headerError(err)
		}
		n = binary.BigEndian.Uint32(hdr)
	}
	if uint64(n) > uint64(max) {
		return int(min(uint64(n), 1<<40)), fmt.Errorf("%w: %d bytes, the limit is %d", ErrFrameTooLarge, n, max)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: empty frame", ErrTruncated)
	}
	return int(n), nil
}

// headerError is the error of a length prefix that could not be read.
func headerError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: stream ended inside a length prefix", ErrTruncated)
	}
	return err
}

// ReadFramePayload reads n payload bytes into buf (grown if needed) and
// returns the payload slice.
func ReadFramePayload(r io.Reader, n int, buf []byte) ([]byte, error) {
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: stream ended inside a %d-byte frame", ErrTruncated, n)
		}
		return nil, err
	}
	return buf, nil
}

// ReadFrame reads one frame of at most max payload bytes, reusing buf when
// it is large enough. io.EOF means the stream ended cleanly between frames.
func ReadFrame(r io.Reader, max int, buf []byte) ([]byte, error) {
	n, err := ReadFrameHeader(r, max)
	if err != nil {
		return nil, err
	}
	return ReadFramePayload(r, n, buf)
}

// AppendFrame appends payload to dst as one frame.
func AppendFrame(dst, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...)
}
