package protocol

// requestFields is every field of a request, in the order the encoder
// writes them; the most frequent come first, since the decoder looks keys
// up in order. Adding a request field to the protocol is adding it to
// Request and one entry here (and a line to PROTOCOL.md §5).
var requestFields = [...]mapField[Request]{
	{name: "id",
		encode: func(w *writer, r *Request) { w.uint(r.ID) },
		decode: func(rd *reader, r *Request) { r.ID = rd.uint("id") }},
	{name: "op",
		encode: func(w *writer, r *Request) { w.str(r.Op.String()) },
		decode: func(rd *reader, r *Request) { r.Op, r.UnknownOp = rd.op() }},
	{name: "key", sent: func(r *Request) bool { return r.Key != "" },
		encode: func(w *writer, r *Request) { w.str(r.Key) },
		decode: func(rd *reader, r *Request) { r.Key = rd.heldStr("key") }},
	{name: "value", sent: func(r *Request) bool { return r.Op == OpSet },
		encode: func(w *writer, r *Request) { w.bytes(r.Value) },
		decode: func(rd *reader, r *Request) { r.Value = rd.heldBytes("value") }},
	{name: "ttl", sent: func(r *Request) bool { return r.TTL != 0 },
		encode: func(w *writer, r *Request) { w.int(r.TTL) },
		decode: func(rd *reader, r *Request) { r.TTL = rd.int("ttl") }},
	{name: "if_version", sent: func(r *Request) bool { return r.HasIfVersion },
		encode: func(w *writer, r *Request) { w.uint(r.IfVersion) },
		decode: func(rd *reader, r *Request) {
			if !rd.isNil() {
				r.IfVersion, r.HasIfVersion = rd.uint("if_version"), true
			}
		}},
	{name: "keys", sent: func(r *Request) bool {
		return r.Keys != nil || r.Op == OpGetMany || r.Op == OpHasMany || r.Op == OpDeleteMany
	},
		encode: func(w *writer, r *Request) {
			w.arrayLen(len(r.Keys))
			for _, k := range r.Keys {
				w.str(k)
			}
		},
		decode: func(rd *reader, r *Request) {
			if m := rd.batchLen("keys"); m >= 0 {
				r.Keys = make([]string, m)
				for j := range r.Keys {
					r.Keys[j] = rd.str("keys[]")
				}
			}
		}},
	{name: "items", sent: func(r *Request) bool { return r.Items != nil || r.Op == OpSetMany },
		encode: func(w *writer, r *Request) {
			w.arrayLen(len(r.Items))
			for j := range r.Items {
				encodeFields(w, itemFields[:], &r.Items[j])
			}
		},
		decode: func(rd *reader, r *Request) {
			if m := rd.batchLen("items"); m >= 0 {
				r.Items = make([]Item, m)
				for j := range r.Items {
					decodeFields(rd, itemFields[:], &r.Items[j])
				}
			}
		}},
	{name: "prefix", sent: func(r *Request) bool { return r.Prefix != "" },
		encode: func(w *writer, r *Request) { w.str(r.Prefix) },
		decode: func(rd *reader, r *Request) { r.Prefix = rd.str("prefix") }},
	{name: "cursor", sent: func(r *Request) bool { return r.Cursor != "" },
		encode: func(w *writer, r *Request) { w.str(r.Cursor) },
		decode: func(rd *reader, r *Request) { r.Cursor = rd.str("cursor") }},
	{name: "limit", sent: func(r *Request) bool { return r.Limit != 0 },
		encode: func(w *writer, r *Request) { w.int(r.Limit) },
		decode: func(rd *reader, r *Request) { r.Limit = rd.int("limit") }},
	{name: "values", sent: func(r *Request) bool { return r.Values },
		encode: func(w *writer, r *Request) { w.bool(true) },
		decode: func(rd *reader, r *Request) { r.Values = rd.bool("values") }},
	{name: "delta", sent: func(r *Request) bool { return r.Op == OpIncr },
		encode: func(w *writer, r *Request) { w.int(r.Delta) },
		decode: func(rd *reader, r *Request) { r.Delta = rd.int("delta") }},
	{name: "timeout", sent: func(r *Request) bool { return r.Timeout != 0 },
		encode: func(w *writer, r *Request) { w.int(r.Timeout) },
		decode: func(rd *reader, r *Request) { r.Timeout = rd.int("timeout") }},
	{name: "version", sent: func(r *Request) bool { return r.Op == OpHello },
		encode: func(w *writer, r *Request) { w.int(r.Version) },
		decode: func(rd *reader, r *Request) { r.Version = rd.int("version") }},
	{name: "client", sent: func(r *Request) bool { return r.Client != "" },
		encode: func(w *writer, r *Request) { w.str(r.Client) },
		decode: func(rd *reader, r *Request) { r.Client = rd.str("client") }},
}

// itemFields is every field of a setMany item, as requestFields is of a
// request.
var itemFields = [...]mapField[Item]{
	{name: "key",
		encode: func(w *writer, it *Item) { w.str(it.Key) },
		decode: func(rd *reader, it *Item) { it.Key = rd.str("items[].key") }},
	{name: "value",
		encode: func(w *writer, it *Item) { w.bytes(it.Value) },
		decode: func(rd *reader, it *Item) { it.Value = rd.bytes("items[].value") }},
	{name: "ttl", sent: func(it *Item) bool { return it.TTL != 0 },
		encode: func(w *writer, it *Item) { w.int(it.TTL) },
		decode: func(rd *reader, it *Item) { it.TTL = rd.int("items[].ttl") }},
	{name: "if_version", sent: func(it *Item) bool { return it.HasIfVersion },
		encode: func(w *writer, it *Item) { w.uint(it.IfVersion) },
		decode: func(rd *reader, it *Item) {
			if !rd.isNil() {
				it.IfVersion, it.HasIfVersion = rd.uint("items[].if_version"), true
			}
		}},
}
