package orders

import "strconv"

// The one-pass parse of plain events. TestDecoderClassifiesAsEncodingJSONDoes
// checks that Decoder decides every value of its corpus (thousands of them
// parsed here, bad events among them) as encoding/json does.

// plainEvent is an event value parsed by parse: the fields the envelope
// and payload may hold, which envelopeIn and payloadIn point to.
type plainEvent struct {
	meta                                metadataIn
	eventID, traceID, typ               string
	timestamp                           int64
	sequence                            uint64
	orderID, customerID, trackingNumber string
	createdAt, updatedAt, shippedAt     int64
	items                               []lineItemIn
	itemValues                          []plainItem
	s                                   plainScanner
	// seen marks the fields read so far, one bit each: a repeated field
	// is not plain.
	seen uint32
}

type plainItem struct {
	sku             string
	quantity, price int64
	seen            uint8 // the fields read, one bit each
}

// parse parses value, a valid UTF-8 JSON object, when it is in the
// plain form producers write: only the contract's field names, each once
// and spelled as the contract spells them, no nulls, strings without
// escapes, integers without fraction or exponent. It fills in and p as
// encoding/json would from the same bytes (in.Payload aside: p is the
// payload, already decoded) and reports true; for anything else it reports
// false and the caller decodes the value in full. Events as producers
// using encoding/json or its peers write them are plain (unless a string
// needs an escape); the rest are still decoded exactly, only slower.
func (pe *plainEvent) parse(value []byte, in *envelopeIn, p *payloadIn) bool {
	pe.s = plainScanner{b: value}
	return pe.s.object(func(key []byte) bool {
		switch string(key) {
		case "metadata":
			in.Metadata = &pe.meta
			return pe.once(0) && pe.s.object(pe.metadataField)
		case "type":
			return pe.str(1, &in.Type, &pe.typ)
		case "payload":
			return pe.once(2) && pe.s.object(func(key []byte) bool { return pe.payloadField(key, p) })
		}
		return false
	}) && pe.s.end() && pe.seen&(1<<2) != 0
}

// once reports whether the field numbered bit is read for the first time.
func (pe *plainEvent) once(bit uint) bool {
	if pe.seen&(1<<bit) != 0 {
		return false
	}
	pe.seen |= 1 << bit
	return true
}

// str reads field number bit, a string, into v, which *field points to.
func (pe *plainEvent) str(bit uint, field **string, v *string) bool {
	*field = v
	return pe.once(bit) && pe.s.str(v)
}

// int reads field number bit, an integer, into v, which *field points to.
func (pe *plainEvent) int(bit uint, field **int64, v *int64) bool {
	*field = v
	return pe.once(bit) && pe.s.int64(v)
}

func (pe *plainEvent) metadataField(key []byte) bool {
	m := &pe.meta
	switch string(key) {
	case "eventId":
		return pe.str(3, &m.EventID, &pe.eventID)
	case "traceId":
		return pe.str(4, &m.TraceID, &pe.traceID)
	case "timestamp":
		return pe.int(5, &m.Timestamp, &pe.timestamp)
	case "sequence":
		m.Sequence = &pe.sequence
		return pe.once(6) && pe.s.uint64(&pe.sequence)
	}
	return false
}

func (pe *plainEvent) payloadField(key []byte, p *payloadIn) bool {
	s := &pe.s
	switch string(key) {
	case "orderId":
		return pe.str(7, &p.OrderID, &pe.orderID)
	case "customerId":
		return pe.str(8, &p.CustomerID, &pe.customerID)
	case "createdAt":
		return pe.int(9, &p.CreatedAt, &pe.createdAt)
	case "updatedAt":
		return pe.int(10, &p.UpdatedAt, &pe.updatedAt)
	case "trackingNumber":
		return pe.str(11, &p.TrackingNumber, &pe.trackingNumber)
	case "shippedAt":
		return pe.int(12, &p.ShippedAt, &pe.shippedAt)
	case "items":
		if !pe.once(13) {
			return false
		}
		pe.itemValues = make([]plainItem, 0, 4)
		ok := s.array(func(i int) bool {
			pe.itemValues = append(pe.itemValues, plainItem{})
			return pe.item(&pe.itemValues[i])
		})
		if !ok {
			return false
		}
		pe.items = make([]lineItemIn, len(pe.itemValues))
		for i := range pe.itemValues {
			v, it := &pe.itemValues[i], &pe.items[i]
			if v.seen&1 != 0 {
				it.SKU = &v.sku
			}
			if v.seen&2 != 0 {
				it.Quantity = &v.quantity
			}
			if v.seen&4 != 0 {
				it.PriceCents = &v.price
			}
		}
		p.Items = &pe.items
		return true
	}
	return false
}

// item reads one line item into v.
func (pe *plainEvent) item(v *plainItem) bool {
	s := &pe.s
	once := func(bit uint8) bool {
		if v.seen&bit != 0 {
			return false
		}
		v.seen |= bit
		return true
	}
	return s.object(func(key []byte) bool {
		switch string(key) {
		case "sku":
			return once(1) && s.str(&v.sku)
		case "quantity":
			return once(2) && s.int64(&v.quantity)
		case "priceCents":
			return once(4) && s.int64(&v.price)
		}
		return false
	})
}

// plainScanner reads the plain JSON parsePlain accepts.
type plainScanner struct {
	b   []byte
	pos int
}

func (s *plainScanner) space() {
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// next skips white space and consumes c.
func (s *plainScanner) next(c byte) bool {
	s.space()
	if s.pos < len(s.b) && s.b[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// end reports whether nothing but white space is left.
func (s *plainScanner) end() bool {
	s.space()
	return s.pos == len(s.b)
}

// rawString reads a string without escapes or control characters.
func (s *plainScanner) rawString() ([]byte, bool) {
	if !s.next('"') {
		return nil, false
	}
	start := s.pos
	for ; s.pos < len(s.b); s.pos++ {
		switch c := s.b[s.pos]; {
		case c == '"':
			s.pos++
			return s.b[start : s.pos-1], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

func (s *plainScanner) str(dst *string) bool {
	b, ok := s.rawString()
	if ok {
		*dst = string(b)
	}
	return ok
}

// digits reads an integer without fraction or exponent, with a sign when
// signed, of at most 18 digits (so it cannot overflow).
func (s *plainScanner) digits(signed bool) ([]byte, bool) {
	s.space()
	start := s.pos
	if signed && s.pos < len(s.b) && s.b[s.pos] == '-' {
		s.pos++
	}
	first := s.pos
	for s.pos < len(s.b) && s.b[s.pos] >= '0' && s.b[s.pos] <= '9' {
		s.pos++
	}
	n := s.pos - first
	if n == 0 || n > 18 || (n > 1 && s.b[first] == '0') {
		return nil, false
	}
	if s.pos < len(s.b) {
		switch s.b[s.pos] {
		case '.', 'e', 'E':
			return nil, false
		}
	}
	return s.b[start:s.pos], true
}

func (s *plainScanner) int64(dst *int64) bool {
	b, ok := s.digits(true)
	if !ok {
		return false
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	*dst = v
	return err == nil
}

func (s *plainScanner) uint64(dst *uint64) bool {
	b, ok := s.digits(false)
	if !ok {
		return false
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	*dst = v
	return err == nil
}

// object reads an object, handing each member's key to member, which reads
// the member's value.
func (s *plainScanner) object(member func(key []byte) bool) bool {
	if !s.next('{') {
		return false
	}
	if s.next('}') {
		return true
	}
	for {
		key, ok := s.rawString()
		if !ok || !s.next(':') || !member(key) {
			return false
		}
		if s.next('}') {
			return true
		}
		if !s.next(',') {
			return false
		}
	}
}

// array reads an array, handing each element's index to element, which
// reads the element.
func (s *plainScanner) array(element func(i int) bool) bool {
	if !s.next('[') {
		return false
	}
	if s.next(']') {
		return true
	}
	for i := 0; ; i++ {
		if !element(i) {
			return false
		}
		if s.next(']') {
			return true
		}
		if !s.next(',') {
			return false
		}
	}
}
