package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/payments"
	"github.com/exactly-go/exactly/examples/payments/gateway"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// PaymentsReport is the audit of a run of the payments application: what
// the input asked for, what the gateway charged, and what the pipeline
// committed.
type PaymentsReport struct {
	// Records is the number of input records; Orders the distinct valid
	// orders among them; Declined those the gateway declines.
	Records, Orders, Declined int
	// Charges is the number of real charges; ChargedOnce the orders with
	// exactly one.
	Charges, ChargedOnce int
	// DuplicateCharges counts charges beyond the first of an order: money
	// taken twice.
	DuplicateCharges int
	// DoubleCharged names the orders charged more than once, sorted.
	DoubleCharged []string
	// Uncharged names valid orders the gateway accepts that have no charge.
	Uncharged []string
	// UnexpectedCharges counts charges of declined or unknown orders.
	UnexpectedCharges int
	// ProcessedRecords and ProcessedOrders count payments-processed
	// records (read_committed) and the orders they cover; RepeatedRecords
	// the records beyond the first of an order.
	ProcessedRecords, ProcessedOrders, RepeatedRecords int
	// WrongTransaction names orders whose record names no charge of theirs.
	WrongTransaction []string
	// Unreported names charged orders without a payments-processed record.
	Unreported []string
	// DeadLetters counts dead-letter records by reason.
	DeadLetters map[string]int
	// DeclinedNotDeadLettered names declined orders missing from the
	// dead-letter topic.
	DeclinedNotDeadLettered []string
	// Malformed is the number of input records that are no payment order;
	// each must be dead-lettered.
	Malformed int
}

// OK reports whether every valid order was charged exactly once and
// reported, every declined order dead-lettered and nothing else charged.
// With exactlyOneRecord, payments-processed must also hold exactly one
// record per charged order (an exactly_once_v2 pipeline); without it,
// repeated records naming the same charge are allowed (an at_least_once
// caller).
func (r *PaymentsReport) OK(exactlyOneRecord bool) bool {
	bad := r.DuplicateCharges + len(r.Uncharged) + r.UnexpectedCharges + len(r.WrongTransaction) +
		len(r.Unreported) + len(r.DeclinedNotDeadLettered)
	if exactlyOneRecord {
		bad += r.RepeatedRecords
	}
	malformed := r.DeadLetters[payments.ReasonMalformed] + r.DeadLetters[payments.ReasonMissingField] + r.DeadLetters[payments.ReasonInvalidAmount]
	return bad == 0 && malformed == r.Malformed
}

// Done reports whether the pipeline has handled every order: each valid
// order is reported or declined, and each malformed record dead-lettered.
// A caller polling a running pipeline audits until Done, then judges OK.
func (r *PaymentsReport) Done() bool {
	return r.ProcessedOrders+r.Declined >= r.Orders && r.DeadLetters[payments.ReasonMalformed] >= r.Malformed
}

// AuditPayments checks a run from its parts: input is what was produced to
// payment-orders, charges what the gateway charged (GET /charges),
// processed and deadLetters the records of payments-processed and the
// dead-letter topic as a read_committed consumer reads them (see
// ReadCommitted), and declineRate the gateway's.
func AuditPayments(input []payments.InputRecord, charges []gateway.Charge, processed, deadLetters []*kgo.Record, declineRate float64) *PaymentsReport {
	r := &PaymentsReport{Records: len(input), DeadLetters: map[string]int{}}
	valid := map[string]bool{}
	for _, in := range input {
		o, _, err := payments.Decode(in.Value)
		if err != nil {
			r.Malformed++
			continue
		}
		valid[o.OrderID] = true
	}
	r.Orders = len(valid)
	chargesOf := map[string][]string{}
	for _, c := range charges {
		r.Charges++
		if !valid[c.OrderID] || gateway.Declined(c.OrderID, declineRate) {
			r.UnexpectedCharges++
			continue
		}
		chargesOf[c.OrderID] = append(chargesOf[c.OrderID], c.TransactionID)
	}
	for id := range valid {
		switch n := len(chargesOf[id]); {
		case gateway.Declined(id, declineRate):
			r.Declined++
		case n == 0:
			r.Uncharged = append(r.Uncharged, id)
		case n == 1:
			r.ChargedOnce++
		default:
			r.DuplicateCharges += n - 1
			r.DoubleCharged = append(r.DoubleCharged, id)
		}
	}
	reported := map[string]bool{}
	for _, rec := range processed {
		r.ProcessedRecords++
		var p payments.PaymentProcessed
		if err := json.Unmarshal(rec.Value, &p); err != nil || !slices.Contains(chargesOf[p.OrderID], p.TransactionID) {
			r.WrongTransaction = append(r.WrongTransaction, string(rec.Key))
			continue
		}
		if reported[p.OrderID] {
			r.RepeatedRecords++
		}
		reported[p.OrderID] = true
	}
	r.ProcessedOrders = len(reported)
	for id := range chargesOf {
		if !reported[id] {
			r.Unreported = append(r.Unreported, id)
		}
	}
	declinedDL := map[string]bool{}
	for _, rec := range deadLetters {
		reason := header(rec, exactly.HeaderErrorReason)
		r.DeadLetters[reason]++
		if reason == payments.ReasonPaymentDeclined {
			declinedDL[string(rec.Key)] = true
		}
	}
	for id := range valid {
		if gateway.Declined(id, declineRate) && !declinedDL[id] {
			r.DeclinedNotDeadLettered = append(r.DeclinedNotDeadLettered, id)
		}
	}
	for _, s := range [][]string{r.DoubleCharged, r.Uncharged, r.WrongTransaction, r.Unreported, r.DeclinedNotDeadLettered} {
		sort.Strings(s)
	}
	return r
}

// PaymentsConfig says where a payments run's topics are and what its
// input and gateway were.
type PaymentsConfig struct {
	Brokers []string
	// Input is what was produced to the input topic.
	Input []payments.InputRecord
	// Charges are the gateway's real charges (GET /charges).
	Charges []gateway.Charge
	// DeclineRate is the gateway's.
	DeclineRate float64
	// OutputTopic and DeadLetterTopic default to the application's
	// defaults (payments-processed, payment-orders-dlq).
	OutputTopic, DeadLetterTopic string
	// Timeout bounds the reads; default one minute.
	Timeout time.Duration
	// ClientOptions are added to the verifier's franz-go clients (TLS,
	// SASL).
	ClientOptions []kgo.Opt
}

// Payments audits a run of the payments application: it
// reads the output and dead-letter topics read_committed and checks them,
// with the gateway's charges, against the input (AuditPayments).
func Payments(ctx context.Context, cfg PaymentsConfig) (*PaymentsReport, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.ClientOptions...)
	processed, err := ReadCommitted(ctx, opts, orDefault(cfg.OutputTopic, payments.DefaultOutputTopic))
	if err != nil {
		return nil, err
	}
	deadLetters, err := ReadCommitted(ctx, opts, orDefault(cfg.DeadLetterTopic, payments.DefaultDeadLetterTopic))
	if err != nil {
		return nil, err
	}
	return AuditPayments(cfg.Input, cfg.Charges, processed, deadLetters, cfg.DeclineRate), nil
}

// ReadCommitted returns the records of topic as a read_committed consumer
// sees them now: from each partition's log start to its last stable
// offset, in partition order. opts configure its franz-go clients (seed
// brokers, TLS, SASL).
func ReadCommitted(ctx context.Context, opts []kgo.Opt, topic string) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	pe, err := ends(ctx, kadm.NewClient(cl), topic)
	cl.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: check the brokers and that the topic exists", err)
	}
	return readTopic(ctx, opts, topic, pe, true)
}

func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Print writes the report as the payments demo shows it.
func (r *PaymentsReport) Print(w io.Writer) {
	fmt.Fprintf(w, "  input records                  %d\n", r.Records)
	fmt.Fprintf(w, "  payment orders                 %d (%d declined by the gateway, %d malformed records)\n", r.Orders, r.Declined, r.Malformed)
	fmt.Fprintf(w, "  charges at the gateway         %d\n", r.Charges)
	fmt.Fprintf(w, "  orders charged exactly once    %d of %d\n", r.ChargedOnce, r.Orders-r.Declined)
	fmt.Fprintf(w, "  duplicate charges              %d%s\n", r.DuplicateCharges, sample(r.DoubleCharged))
	fmt.Fprintf(w, "  orders never charged           %d%s\n", len(r.Uncharged), sample(r.Uncharged))
	if r.UnexpectedCharges > 0 {
		fmt.Fprintf(w, "  charges of declined or unknown orders %d\n", r.UnexpectedCharges)
	}
	fmt.Fprintf(w, "  payments-processed records     %d for %d orders (%d repeated)\n", r.ProcessedRecords, r.ProcessedOrders, r.RepeatedRecords)
	if len(r.WrongTransaction)+len(r.Unreported) > 0 {
		fmt.Fprintf(w, "  records naming no charge       %d%s\n", len(r.WrongTransaction), sample(r.WrongTransaction))
		fmt.Fprintf(w, "  charged orders not reported    %d%s\n", len(r.Unreported), sample(r.Unreported))
	}
	for _, reason := range slices.Sorted(maps.Keys(r.DeadLetters)) {
		fmt.Fprintf(w, "  dead letters %-17s %d\n", reason, r.DeadLetters[reason])
	}
	if len(r.DeclinedNotDeadLettered) > 0 {
		fmt.Fprintf(w, "  declined, not dead-lettered    %d%s\n", len(r.DeclinedNotDeadLettered), sample(r.DeclinedNotDeadLettered))
	}
}

func sample(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	if len(ids) > 5 {
		return fmt.Sprintf(" (%v …)", ids[:5])
	}
	return fmt.Sprintf(" %v", ids)
}
