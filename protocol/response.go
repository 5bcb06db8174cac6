package protocol

// A result is the shape of an op's result on the wire and the Response
// fields that hold it. Each op names its result in opSpecs, so an op whose
// result has an existing shape needs no code here.
type result uint8

const (
	resultNil    result = iota // nil (ping, set, setMany); a reader skips whatever comes
	resultValue                // bin or nil: Found, Value
	resultFound                // bool: Found
	resultBool                 // bool: Bool
	resultInt                  // int: Int
	resultValues               // array of bin or nil: Values
	resultBools                // array of bool: Bools
	resultList                 // map: List
	resultUsage                // map: Usage
	resultHello                // map: Hello
	resultTTL                  // int or nil: Found, Int
)

// encode writes the response: id, then error or result.
func (r *Response) encode(w *writer) {
	n := 2
	if r.Err == nil && r.Version != 0 {
		n++
	}
	if r.Err == nil && r.Versions != nil {
		n++
	}
	w.mapLen(n)
	w.str("id")
	w.uint(r.ID)
	if r.Err != nil {
		w.str("error")
		encodeFields(w, errorFields[:], r.Err)
		return
	}
	if r.Version != 0 {
		w.str("version")
		w.uint(r.Version)
	}
	if r.Versions != nil {
		w.str("versions")
		w.uints(r.Versions)
	}
	w.str("result")
	switch r.Op.result() {
	case resultValue:
		if r.Found {
			w.bytes(r.Value)
		} else {
			w.nil()
		}
	case resultFound, resultBool:
		w.bool(r.Found || r.Bool)
	case resultInt:
		w.int(r.Int)
	case resultValues:
		w.arrayLen(len(r.Values))
		for _, v := range r.Values {
			if v == nil {
				w.nil()
			} else {
				w.bytes(v)
			}
		}
	case resultBools:
		w.arrayLen(len(r.Bools))
		for _, b := range r.Bools {
			w.bool(b)
		}
	case resultList:
		encodeFields(w, listFields[:], &r.List)
	case resultUsage:
		encodeFields(w, usageFields[:], &r.Usage)
	case resultHello:
		encodeFields(w, helloFields[:], &r.Hello)
	case resultTTL:
		if r.Found {
			w.int(r.Int)
		} else {
			w.nil()
		}
	default:
		w.nil()
	}
}

// decode reads a response map. r.Op must be set to the request's op.
func (r *Response) decode(rd *reader) {
	n := rd.mapLen()
	for i := 0; i < n && rd.err == nil; i++ {
		switch string(rd.key()) {
		case "id":
			r.ID = rd.uint("id")
		case "error":
			r.Err = &Error{}
			decodeFields(rd, errorFields[:], r.Err)
			if !r.Err.Code.Known() {
				r.Err.Code = CodeInternal
			}
		case "result":
			r.decodeResult(rd)
		case "version":
			r.Version = rd.uint("version")
		case "versions":
			r.Versions = rd.uints("versions")
		default:
			rd.skip()
		}
	}
}

func (r *Response) decodeResult(rd *reader) {
	switch r.Op.result() {
	case resultValue:
		if !rd.isNil() {
			r.Value = rd.bytes("result")
			r.Found = rd.err == nil
		}
	case resultFound:
		r.Found = rd.bool("result")
	case resultBool:
		r.Bool = rd.bool("result")
	case resultInt:
		r.Int = rd.int("result")
	case resultValues:
		if m := rd.arrayLen("result"); m >= 0 {
			r.Values = make([][]byte, m)
			for j := range r.Values {
				if !rd.isNil() {
					r.Values[j] = rd.bytes("result[]")
				}
			}
		}
	case resultBools:
		if m := rd.arrayLen("result"); m >= 0 {
			r.Bools = make([]bool, m)
			for j := range r.Bools {
				r.Bools[j] = rd.bool("result[]")
			}
		}
	case resultList:
		decodeFields(rd, listFields[:], &r.List)
	case resultUsage:
		decodeFields(rd, usageFields[:], &r.Usage)
	case resultHello:
		decodeFields(rd, helloFields[:], &r.Hello)
	case resultTTL:
		if !rd.isNil() {
			r.Int = rd.int("result")
			r.Found = rd.err == nil
		}
	default:
		rd.skip()
	}
}

var errorFields = [...]mapField[Error]{
	{name: "code",
		encode: func(w *writer, e *Error) { w.str(string(e.Code)) },
		decode: func(rd *reader, e *Error) { e.Code = Code(rd.str("error.code")) }},
	{name: "message",
		encode: func(w *writer, e *Error) { w.str(e.Message) },
		decode: func(rd *reader, e *Error) { e.Message = rd.str("error.message") }},
	{name: "keys", sent: func(e *Error) bool { return e.Keys != nil },
		encode: func(w *writer, e *Error) {
			w.arrayLen(len(e.Keys))
			for _, k := range e.Keys {
				w.str(k)
			}
		},
		decode: func(rd *reader, e *Error) {
			if m := rd.arrayLen("error.keys"); m >= 0 {
				e.Keys = make([]string, m)
				for j := range e.Keys {
					e.Keys[j] = rd.str("error.keys[]")
				}
			}
		}},
}

var listFields = [...]mapField[ListResult]{
	{name: "keys",
		encode: func(w *writer, l *ListResult) {
			w.arrayLen(len(l.Keys))
			for _, k := range l.Keys {
				w.str(k)
			}
		},
		decode: func(rd *reader, l *ListResult) {
			if m := rd.arrayLen("result.keys"); m >= 0 {
				l.Keys = make([]string, m)
				for j := range l.Keys {
					l.Keys[j] = rd.str("result.keys[]")
				}
			}
		}},
	{name: "values", sent: func(l *ListResult) bool { return l.Values != nil },
		encode: func(w *writer, l *ListResult) {
			w.arrayLen(len(l.Values))
			for _, v := range l.Values {
				w.bytes(v)
			}
		},
		decode: func(rd *reader, l *ListResult) {
			if m := rd.arrayLen("result.values"); m >= 0 {
				l.Values = make([][]byte, m)
				for j := range l.Values {
					l.Values[j] = rd.bytes("result.values[]")
				}
			}
		}},
	{name: "versions", sent: func(l *ListResult) bool { return l.Versions != nil },
		encode: func(w *writer, l *ListResult) { w.uints(l.Versions) },
		decode: func(rd *reader, l *ListResult) { l.Versions = rd.uints("result.versions") }},
	{name: "cursor",
		encode: func(w *writer, l *ListResult) {
			if l.Cursor == "" {
				w.nil()
			} else {
				w.str(l.Cursor)
			}
		},
		decode: func(rd *reader, l *ListResult) {
			if !rd.isNil() {
				l.Cursor = rd.str("result.cursor")
			}
		}},
}

var usageFields = [...]mapField[UsageResult]{
	{name: "bytes",
		encode: func(w *writer, u *UsageResult) { w.int(u.Bytes) },
		decode: func(rd *reader, u *UsageResult) { u.Bytes = rd.int("result.bytes") }},
	{name: "entries",
		encode: func(w *writer, u *UsageResult) { w.int(u.Entries) },
		decode: func(rd *reader, u *UsageResult) { u.Entries = rd.int("result.entries") }},
	{name: "quota",
		encode: func(w *writer, u *UsageResult) { w.int(u.Quota) },
		decode: func(rd *reader, u *UsageResult) { u.Quota = rd.int("result.quota") }},
}

var helloFields = [...]mapField[HelloResult]{
	{name: "version",
		encode: func(w *writer, h *HelloResult) { w.int(h.Version) },
		decode: func(rd *reader, h *HelloResult) { h.Version = rd.int("result.version") }},
	{name: "server",
		encode: func(w *writer, h *HelloResult) { w.str(h.Server) },
		decode: func(rd *reader, h *HelloResult) { h.Server = rd.str("result.server") }},
	{name: "project",
		encode: func(w *writer, h *HelloResult) { w.str(h.Project) },
		decode: func(rd *reader, h *HelloResult) { h.Project = rd.str("result.project") }},
	{name: "limits",
		encode: func(w *writer, h *HelloResult) { encodeFields(w, limitFields[:], &h.Limits) },
		decode: func(rd *reader, h *HelloResult) { decodeFields(rd, limitFields[:], &h.Limits) }},
}

var limitFields = [...]mapField[Limits]{
	{name: "max_key",
		encode: func(w *writer, l *Limits) { w.int(l.MaxKey) },
		decode: func(rd *reader, l *Limits) { l.MaxKey = rd.int("limits.max_key") }},
	{name: "max_value",
		encode: func(w *writer, l *Limits) { w.int(l.MaxValue) },
		decode: func(rd *reader, l *Limits) { l.MaxValue = rd.int("limits.max_value") }},
	{name: "max_frame",
		encode: func(w *writer, l *Limits) { w.int(l.MaxFrame) },
		decode: func(rd *reader, l *Limits) { l.MaxFrame = rd.int("limits.max_frame") }},
	{name: "max_inflight",
		encode: func(w *writer, l *Limits) { w.int(l.MaxInflight) },
		decode: func(rd *reader, l *Limits) { l.MaxInflight = rd.int("limits.max_inflight") }},
	{name: "max_batch",
		encode: func(w *writer, l *Limits) { w.int(l.MaxBatch) },
		decode: func(rd *reader, l *Limits) { l.MaxBatch = rd.int("limits.max_batch") }},
	{name: "max_response",
		encode: func(w *writer, l *Limits) { w.int(l.MaxResponse) },
		decode: func(rd *reader, l *Limits) { l.MaxResponse = rd.int("limits.max_response") }},
}
