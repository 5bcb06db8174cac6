package protocol

import (
	"bytes"
	"strings"
)

// Version is the protocol version this package speaks. Version 2 added
// entry versions, conditional writes (if_version), the ttl and expire ops
// and the conflict error; PROTOCOL.md §8 lists the changes.
const Version = 2

// Op names an operation. On the wire it is a string, its String.
type Op uint8

// Operations. OpInvalid is the zero value and never valid on the wire.
const (
	OpInvalid Op = iota
	OpHello
	OpPing
	OpGet
	OpSet
	OpDelete
	OpHas
	OpClear
	OpGetMany
	OpSetMany
	OpDeleteMany
	OpHasMany
	OpList
	OpIncr
	OpUsage
	OpTTL
	OpExpire
	opCount
)

// opSpec is what the codec knows of an op.
type opSpec struct {
	name   string // on the wire
	result result // the shape of its result
}

// opSpecs describes every op. Adding an op to the protocol is adding its
// constant above and one entry here, plus an entry in requestFields for
// each request field it is the first to use.
var opSpecs = [opCount]opSpec{
	OpHello:      {"hello", resultHello},
	OpPing:       {"ping", resultNil},
	OpGet:        {"get", resultValue},
	OpSet:        {"set", resultNil},
	OpDelete:     {"delete", resultBool},
	OpHas:        {"has", resultFound},
	OpClear:      {"clear", resultInt},
	OpGetMany:    {"getMany", resultValues},
	OpSetMany:    {"setMany", resultNil},
	OpDeleteMany: {"deleteMany", resultBools},
	OpHasMany:    {"hasMany", resultBools},
	OpList:       {"list", resultList},
	OpIncr:       {"incr", resultInt},
	OpUsage:      {"usage", resultUsage},
	OpTTL:        {"ttl", resultTTL},
	OpExpire:     {"expire", resultBool},
}

// String returns the op's wire name.
func (o Op) String() string {
	if o < opCount && o != OpInvalid {
		return opSpecs[o].name
	}
	return "invalid"
}

// result is the shape of the op's result; resultNil for an invalid op.
func (o Op) result() result {
	if o < opCount {
		return opSpecs[o].result
	}
	return resultNil
}

// ParseOp returns the op with the given wire name, or OpInvalid.
func ParseOp(name string) Op {
	for i := OpHello; i < opCount; i++ {
		if opSpecs[i].name == name {
			return i
		}
	}
	return OpInvalid
}

// Ops lists every valid op, in wire-name order of PROTOCOL.md.
func Ops() []Op {
	ops := make([]Op, 0, opCount-1)
	for i := OpHello; i < opCount; i++ {
		ops = append(ops, i)
	}
	return ops
}

// Request is one request frame. Which fields matter depends on Op; an absent
// field decodes as its zero value.
type Request struct {
	ID  uint64 // chosen by the client, echoed in the response
	Op  Op
	Key string // get, set, delete, has, incr, ttl, expire

	Value []byte // set
	TTL   int64  // set, incr, expire: milliseconds; 0 = no expiry, negative = error

	// IfVersion is the condition of a set or delete, when HasIfVersion:
	// 0 = only if the key does not exist, N = only if its version is N.
	IfVersion    uint64
	HasIfVersion bool

	Keys  []string // getMany, deleteMany, hasMany
	Items []Item   // setMany

	Prefix string // list
	Cursor string // list: the cursor of the previous page ("" = first page)
	Limit  int64  // list: at most this many keys (0 = server default)
	Values bool   // list: return values too

	Delta int64 // incr

	// Timeout, in milliseconds, is how long the client will wait for the
	// answer (0 = no limit given). The server gives up on the request
	// before that and answers unavailable, so the client hears why instead
	// of timing out on its own.
	Timeout int64

	Version int64  // hello: the highest protocol version the client speaks
	Client  string // hello: the client's name and version, for logs

	// UnknownOp holds the op name when the request named an op this
	// package does not know (Op is then OpInvalid), so the error can name it.
	UnknownOp string
}

// Own gives req copies of its own Key and Value, for a request decoded with
// Decoder.Borrow that must outlive its payload.
func (req *Request) Own() {
	req.Key = strings.Clone(req.Key)
	req.Value = bytes.Clone(req.Value)
}

// Item is one entry of a setMany.
type Item struct {
	Key   string
	Value []byte
	TTL   int64 // milliseconds; 0 = no expiry

	IfVersion    uint64 // the item's condition, when HasIfVersion (see Request)
	HasIfVersion bool
}

// Response is one response frame: ID and either Err or the result of Op.
// Op is not sent; it selects which result field is encoded, and a client
// sets it before decoding so the result is decoded into the right field.
type Response struct {
	ID  uint64
	Op  Op
	Err *Error

	Found  bool     // get: whether Value is present; has; ttl: whether the key exists
	Value  []byte   // get
	Bool   bool     // delete: whether the key existed; expire: the same
	Int    int64    // clear: entries removed; incr: the new value; ttl: ms left (0 = none)
	Values [][]byte // getMany: nil for a missing key
	Bools  []bool   // hasMany: found; deleteMany: existed

	// Version is the entry's version: of the value a get returns, or the
	// one a set or expire wrote (0 = none, not sent).
	Version uint64
	// Versions holds one version per key of a getMany (0 for a missing
	// key) or item of a setMany; nil = not sent.
	Versions []uint64
	List     ListResult
	Usage    UsageResult
	Hello    HelloResult
}

// ListResult is the result of a list.
type ListResult struct {
	Keys     []string
	Values   [][]byte // present only when the request asked for values
	Versions []uint64 // one per key; nil = not sent (servers of version 1)
	Cursor   string   // "" when there are no more pages
}

// UsageResult is the result of usage.
type UsageResult struct {
	Bytes   int64 // sum of len(key)+len(value) of the project's entries
	Entries int64 // number of entries
	Quota   int64 // the project's quota in bytes
}

// HelloResult is the server's answer to a hello.
type HelloResult struct {
	Version int64  // the protocol version the server will speak
	Server  string // the server's name and version
	Project string // the caller's project, resolved from its credentials
	Limits  Limits
}

// Limits are the server's limits, announced in the hello result.
type Limits struct {
	MaxKey      int64 // bytes of a key
	MaxValue    int64 // bytes of a value
	MaxFrame    int64 // bytes of a frame payload
	MaxInflight int64 // requests in flight per connection before the server stops reading
	MaxBatch    int64 // keys or items of one *Many request, and entries of one list page
	MaxResponse int64 // bytes of a response payload; 0 from a server that does not announce it
}
