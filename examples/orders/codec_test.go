package orders

import (
	"bytes"
	stdjson "encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"unicode/utf8"

	json "github.com/goccy/go-json"
)

// codecCorpus is generated input with many bad records, and mutations of
// it: truncations, deletions and insertions of JSON's own characters.
func codecCorpus(n int) [][]byte {
	gen := DefaultGenerateOptions(7, 200, 1)
	gen.MalformedRate, gen.Sequences = 0.3, true
	var seeds [][]byte
	for _, r := range Generate(gen) {
		seeds = append(seeds, r.Value)
	}
	// Repeated keys: the last one counts, and objects repeated are merged.
	seeds = append(seeds,
		[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c","createdAt":1},"payload":{"customerId":"d"}}`),
		[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c","createdAt":1},"payload":null}`),
		[]byte(`{"metadata":{"eventId":"e"},"metadata":{"timestamp":1732260000000},"type":"OrderShipped","type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c","createdAt":1}}`),
		[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderCreated","payload":[],"payload":{"orderId":"o-1","customerId":"c","createdAt":1}}`),
		[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c","createdAt":"1"},"type":"Nope"}`),
	)
	rng := rand.New(rand.NewPCG(7, 7))
	alphabet := []byte(`{}[]":,0123456789-+.eEtrufalsn \ax` + "\t\u00e9")
	out := append([][]byte{}, seeds...)
	for len(out) < n {
		b := bytes.Clone(seeds[rng.IntN(len(seeds))])
		for range 1 + rng.IntN(3) {
			pos := rng.IntN(len(b))
			switch rng.IntN(4) {
			case 0:
				b[pos] = alphabet[rng.IntN(len(alphabet))]
			case 1:
				b = append(b[:pos], b[pos+1:]...)
			case 2:
				b = append(b[:pos], append([]byte{alphabet[rng.IntN(len(alphabet))]}, b[pos:]...)...)
			case 3:
				b = b[:pos+1]
			}
			if len(b) == 0 {
				b = []byte("{")
			}
		}
		out = append(out, b)
	}
	return out
}

// plainEdgeCases are values at the edges of what the plain parse accepts.
var plainEdgeCases = [][]byte{
	[]byte(`{"metadata":{"eventId":"e","timestamp":-0},"type":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":0}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000,"sequence":0},"type":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":1}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000,"sequence":-1},"type":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":1}}`),
	[]byte(`{"metadata":{},"type":"OrderCreated","payload":{}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderUpdated","payload":{"orderId":"o","items":[],"updatedAt":1}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderUpdated","payload":{"orderId":"o","items":[{}],"updatedAt":1}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderUpdated","payload":{"orderId":"o","items":[{"sku":"s","quantity":1,"priceCents":-1}],"updatedAt":1}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderUpdated","payload":{"orderId":"o","items":[{"sku":"s","quantity":1,"priceCents":2,"sku":"t"}],"updatedAt":1}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":1},"extra":1}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":1}} x`),
	[]byte(`{"Metadata":{"EventID":"e","timestamp":1732260000000},"TYPE":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":1}}`),
	[]byte(`{"metadata":{"eventId":"e\u0041","timestamp":1732260000000},"type":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":1}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000.0},"type":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":1e3}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":99999999999999999999},"type":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":1}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":017},"type":"OrderCreated","payload":{"orderId":"o","customerId":"c","createdAt":1}}`),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderShipped","payload":{"orderId":"o","trackingNumber":"t","shippedAt":1,"orderId":"p"}}`),
	[]byte(`{"metadata":{"eventId":"é","timestamp":1732260000000},"type":"OrderShipped","payload":{"orderId":"o","trackingNumber":"\u2028","shippedAt":1}}`),
	[]byte(" \t{ \"metadata\" : { \"eventId\" : \"e\" , \"timestamp\" : 1732260000000 } , \"type\" : \"OrderShipped\" , \"payload\" : { \"orderId\" : \"o\" , \"trackingNumber\" : \"t\" , \"shippedAt\" : 1 } }\n"),
	[]byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderShipped"}`),
	[]byte(`{"metadata":null,"type":"OrderShipped","payload":{"orderId":"o","trackingNumber":"t","shippedAt":1}}`),
}

// TestDecoderClassifiesAsEncodingJSONDoes checks that the decoder decides
// every input as it did with encoding/json: the same reason for a bad
// record, the same event for a good one.
func TestDecoderClassifiesAsEncodingJSONDoes(t *testing.T) {
	d := Decoder{}.withDefaults()
	valid, plain, plainBad := 0, 0, 0
	corpus := append(codecCorpus(30000), plainEdgeCases...)
	for _, value := range corpus {
		want, wantErr := d.decodeValueWith(stdjson.Unmarshal, value, true)
		for _, c := range []struct {
			name   string
			decode func() (Event, *DecodeError)
		}{
			{"go-json", func() (Event, *DecodeError) { return d.decodeValueWith(json.Unmarshal, value, true) }},
			{"plain parse, else go-json", func() (Event, *DecodeError) { return d.decodeValue(value, true) }},
		} {
			got, gotErr := c.decode()
			if (wantErr == nil) != (gotErr == nil) || (wantErr != nil && wantErr.Reason != gotErr.Reason) {
				t.Fatalf("%s:\n encoding/json: %v\n %s: %v", value, wantErr, c.name, gotErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s decodes to\n%+v with %s, encoding/json to\n%+v", value, got, c.name, want)
			}
		}
		if wantErr == nil {
			valid++
		}
		var pe plainEvent
		if utf8.Valid(value) && pe.parse(value, &envelopeIn{}, &payloadIn{}) {
			plain++
			if wantErr != nil {
				plainBad++
			}
		}
	}
	if valid < 1000 {
		t.Fatalf("only %d valid events in the corpus", valid)
	}
	// The plain parse must have met enough of the corpus, bad events
	// included (a missing field, a negative quantity), to be checked.
	if plain < 1000 || plainBad < 100 {
		t.Fatalf("the plain parse took %d values of the corpus (%d of them bad events), too few to check it", plain, plainBad)
	}
	t.Logf("%d values, %d valid events, %d parsed plain (%d of them bad events)", len(corpus), valid, plain, plainBad)
}

// TestProjectionsEncodeAsEncodingJSONDoes checks that the projections
// emitted (a wire contract) are the bytes encoding/json gives.
func TestProjectionsEncodeAsEncodingJSONDoes(t *testing.T) {
	exp := Oracle(Generate(DefaultGenerateOptions(3, 300, 2)), Options{})
	var projections []Projection
	for _, ups := range exp.Updates {
		projections = append(projections, ups...)
	}
	projections = append(projections, Projection{}, Projection{
		OrderID: "o-<&>\u2028\"\\", CustomerID: "c-é\x01", Items: []LineItem{{SKU: "</script>", Quantity: -1}},
		LastEventID: "e-\ufffd",
	})
	for _, p := range projections {
		want, err := stdjson.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := jsonSerde[Projection]{}.Serialize(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("projection encodes as\n%s (%v), encoding/json gives\n%s", got, err, want)
		}
	}
}

func sampleAggregates() []Aggregate {
	records := Generate(DefaultGenerateOptions(11, 100, 1))
	byOrder := map[string]*Aggregate{}
	out := []Aggregate{{}, {Projection: Projection{Items: []LineItem{}}}}
	for _, r := range records {
		e, err := Decode(r.Key, r.Value)
		if err != nil {
			continue
		}
		a := byOrder[e.OrderID()]
		if a == nil {
			a = &Aggregate{}
			byOrder[e.OrderID()] = a
		}
		a.Apply(e)
		out = append(out, a.Clone())
	}
	return out
}

func TestAggregateSerdeRoundTripsAndReadsTheJSONOfEarlierVersions(t *testing.T) {
	for _, a := range sampleAggregates() {
		b, err := AggregateSerde{}.Serialize(a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := AggregateSerde{}.Deserialize(b)
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Fatalf("round trip of %+v gives %+v (%v)", a, got, err)
		}
		legacy, _ := stdjson.Marshal(a)
		got, err = AggregateSerde{}.Deserialize(legacy)
		if err != nil || !reflect.DeepEqual(got, a) {
			t.Fatalf("the JSON %s reads as %+v (%v)", legacy, got, err)
		}
		for n := range len(b) {
			if _, err := (AggregateSerde{}).Deserialize(b[:n]); err == nil {
				t.Fatalf("%d of %d bytes decode without error", n, len(b))
			}
		}
	}
}

// The benchmarks below measure each codec step on its own, the way the
// application used to do it against the way it does now:
//
//	go test -run '^$' -bench 'Decode|Aggregate|ProjectionEncode' -benchmem ./examples/orders

func BenchmarkDecodeEvent(b *testing.B) {
	values := codecCorpus(0)[:200]
	d := Decoder{}.withDefaults()
	for _, lib := range []struct {
		name      string
		unmarshal func([]byte, any) error
	}{{"encoding-json", stdjson.Unmarshal}, {"go-json", json.Unmarshal}} {
		b.Run(lib.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				d.decodeValueWith(lib.unmarshal, values[i%len(values)], true)
			}
		})
	}
	b.Run("plain-parse-else-go-json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			d.decodeValue(values[i%len(values)], true)
		}
	})
}

func BenchmarkAggregate(b *testing.B) {
	aggs := sampleAggregates()
	codecs := []struct {
		name string
		enc  func(Aggregate) ([]byte, error)
		dec  func([]byte) (Aggregate, error)
	}{
		{"encoding-json", func(a Aggregate) ([]byte, error) { return stdjson.Marshal(a) },
			func(b []byte) (a Aggregate, err error) { err = stdjson.Unmarshal(b, &a); return a, err }},
		{"binary", AggregateSerde{}.Serialize, AggregateSerde{}.Deserialize},
	}
	for _, c := range codecs {
		encoded := make([][]byte, len(aggs))
		for i, a := range aggs {
			encoded[i], _ = c.enc(a)
		}
		b.Run("encode/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				c.enc(aggs[i%len(aggs)])
			}
		})
		b.Run("decode/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				c.dec(encoded[i%len(encoded)])
			}
		})
	}
}

func BenchmarkProjectionEncode(b *testing.B) {
	var projections []Projection
	for _, a := range sampleAggregates() {
		projections = append(projections, a.Projection)
	}
	for _, lib := range []struct {
		name    string
		marshal func(any) ([]byte, error)
	}{{"encoding-json", stdjson.Marshal}, {"go-json", json.Marshal}} {
		b.Run(lib.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				lib.marshal(projections[i%len(projections)])
			}
		})
	}
}
