package verify_test

import (
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/payments"
	"github.com/exactly-go/exactly/examples/payments/gateway"
	"github.com/exactly-go/exactly/processors/sideeffect"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/exactly-go/exactly/verify"
	"github.com/twmb/franz-go/pkg/kgo"
)

// committedRecords converts the driver's committed records of topic.
func committedRecords(d *testdriver.Driver, topic string) []*kgo.Record {
	var out []*kgo.Record
	for _, r := range d.TopicRecords(topic, 0) {
		k := &kgo.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
		for _, h := range r.Headers {
			k.Headers = append(k.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		out = append(out, k)
	}
	return out
}

// TestPaymentsAuditPassesAnHonestRunAndCatchesTampering runs the direct
// payments pipeline in the test driver against a real gateway, with
// crashes: the audit passes. Then it tampers with each part of the
// evidence (a second charge, a repeated record, a lost dead letter, an
// uncharged order) and the audit names each.
func TestPaymentsAuditPassesAnHonestRunAndCatchesTampering(t *testing.T) {
	const declineRate = 0.1
	gw, err := gateway.Start("127.0.0.1:0", gateway.Options{DeclineRate: declineRate, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	top, err := payments.DirectTopology(payments.Options{Gateway: &gateway.Client{BaseURL: gw.URL}, Retry: sideeffect.Retry{Initial: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	gen := payments.DefaultGenerateOptions(3, 80)
	gen.Malformed = 4
	input := payments.Generate(gen)
	run, err := d.RunWithCrashes(testdriver.CrashSchedule{Seed: 3}, len(input), func(i int) error {
		return d.PipeBytes(payments.DefaultInputTopic, input[i].Key, input[i].Value, input[i].Timestamp)
	})
	if err != nil {
		t.Fatal(err)
	}
	processed, deadLetters := committedRecords(d, payments.DefaultOutputTopic), committedRecords(d, payments.DefaultDeadLetterTopic)
	charges := gw.Charges()

	rep := verify.AuditPayments(input, charges, processed, deadLetters, declineRate)
	if !rep.OK(true) || !rep.Done() || rep.Declined == 0 || rep.Malformed == 0 {
		t.Fatalf("honest run (%v): audit %+v; want OK and done, with declines and malformed records", run, rep)
	}

	tampered := []struct {
		name  string
		audit func() *verify.PaymentsReport
		found func(*verify.PaymentsReport) bool
	}{
		{"a second charge", func() *verify.PaymentsReport {
			c := append(append([]gateway.Charge(nil), charges...), gateway.Charge{OrderID: charges[0].OrderID, TransactionID: "tx-again"})
			return verify.AuditPayments(input, c, processed, deadLetters, declineRate)
		}, func(r *verify.PaymentsReport) bool { return r.DuplicateCharges == 1 && len(r.DoubleCharged) == 1 }},
		{"a repeated record", func() *verify.PaymentsReport {
			return verify.AuditPayments(input, charges, append(processed[:len(processed):len(processed)], processed[0]), deadLetters, declineRate)
		}, func(r *verify.PaymentsReport) bool { return r.RepeatedRecords == 1 && r.OK(false) }},
		{"a lost dead letter", func() *verify.PaymentsReport {
			var kept []*kgo.Record
			dropped := false
			for _, r := range deadLetters {
				if !dropped && headerOf(r, exactly.HeaderErrorReason) == payments.ReasonPaymentDeclined {
					dropped = true
					continue
				}
				kept = append(kept, r)
			}
			return verify.AuditPayments(input, charges, processed, kept, declineRate)
		}, func(r *verify.PaymentsReport) bool { return len(r.DeclinedNotDeadLettered) == 1 }},
		{"an uncharged order", func() *verify.PaymentsReport {
			return verify.AuditPayments(input, charges[1:], processed, deadLetters, declineRate)
		}, func(r *verify.PaymentsReport) bool { return len(r.Uncharged) == 1 && len(r.WrongTransaction) == 1 }},
	}
	for _, tc := range tampered {
		r := tc.audit()
		if r.OK(true) || !tc.found(r) {
			t.Errorf("%s: audit %+v; want it to fail naming it", tc.name, r)
		}
	}
}

func headerOf(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
