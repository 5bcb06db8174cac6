// Package protocol is the wire protocol between the kvsidecar daemon and
// its clients: frames (a length prefix and one msgpack map), the request
// and response messages, their error codes, and where a client finds the
// daemon's socket. PROTOCOL.md in this directory is the specification;
// this package is its Go implementation, used by the daemon (sidecar) and
// the Go client (client). It does no I/O beyond io.Reader and io.Writer.
//
// The files:
//   - frame.go: reading and writing frames.
//   - message.go: Request, Response and the ops (opSpecs: an op's name and
//     the shape of its result).
//   - request.go: the request's fields (requestFields), each defined once
//     for both the encoder and the decoder.
//   - response.go: the response and its results.
//   - msgpack.go: the msgpack primitives the codecs are written in, and
//     mapField, the table entry that defines a map field once.
//   - codec.go: Encoder and Decoder.
//   - errors.go: error codes and decode errors.
package protocol

// Where clients find the daemon (PROTOCOL.md §1): the path the application
// gives, else $KV_SOCKET, else DefaultSocket. The daemon listens on
// DefaultSocket unless told otherwise.
const (
	// DefaultSocket is the daemon's socket when nothing names another.
	DefaultSocket = "/run/kvsidecar/kv.sock"
	// SocketEnv is the environment variable that names the socket.
	SocketEnv = "KV_SOCKET"
)
