package payments

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/payments/gateway"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Report is the audit of a payments run: what the input asked for, what
// the gateway charged, and what the pipeline committed.
type Report struct {
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
func (r *Report) OK(exactlyOneRecord bool) bool {
	bad := r.DuplicateCharges + len(r.Uncharged) + r.UnexpectedCharges + len(r.WrongTransaction) +
		len(r.Unreported) + len(r.DeclinedNotDeadLettered)
	if exactlyOneRecord {
		bad += r.RepeatedRecords
	}
	malformed := r.DeadLetters[ReasonMalformed] + r.DeadLetters[ReasonMissingField] + r.DeadLetters[ReasonInvalidAmount]
	return bad == 0 && malformed == r.Malformed
}

// Audit checks a run: input is what was produced to payment-orders,
// charges what the gateway charged (GET /charges), processed and
// deadLetters the records of payments-processed and the dead-letter topic,
// as a read_committed consumer reads them; declineRate is the gateway's.
func Audit(input []InputRecord, charges []gateway.Charge, processed, deadLetters []*kgo.Record, declineRate float64) *Report {
	r := &Report{Records: len(input), DeadLetters: map[string]int{}}
	valid := map[string]bool{}
	for _, in := range input {
		o, _, err := Decode(in.Value)
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
		var p PaymentProcessed
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
		if reason == ReasonPaymentDeclined {
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

func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Print writes the report as the demo shows it.
func (r *Report) Print(w io.Writer) {
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
	reasons := make([]string, 0, len(r.DeadLetters))
	for reason := range r.DeadLetters {
		reasons = append(reasons, reason)
	}
	sort.Strings(reasons)
	for _, reason := range reasons {
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

// ReadCommitted returns the records of topic as a read_committed consumer
// sees them now: from each partition's start to its last stable offset.
func ReadCommitted(ctx context.Context, opts []kgo.Opt, topic string) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	var stable kadm.ListedOffsets
	if err == nil {
		stable, err = adm.ListCommittedOffsets(ctx, topic)
	}
	if err == nil {
		err = stable.Error()
	}
	cl.Close()
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w: check the brokers and that the topic exists", topic, err)
	}
	from := map[int32]kgo.Offset{}
	until := map[int32]int64{}
	stable.Each(func(o kadm.ListedOffset) {
		start, _ := starts.Lookup(topic, o.Partition)
		if o.Offset > start.Offset {
			from[o.Partition] = kgo.NewOffset().At(start.Offset)
			until[o.Partition] = o.Offset
		}
	})
	if len(from) == 0 {
		return nil, nil
	}
	cl, err = kgo.NewClient(append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(until) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", topic, err)
		}
		if err := fetches.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", topic, err)
		}
		fetches.EachRecord(func(rec *kgo.Record) {
			end, reading := until[rec.Partition]
			if !reading || rec.Offset >= end {
				return
			}
			if !rec.Attrs.IsControl() {
				out = append(out, rec)
			}
			if rec.Offset+1 >= end {
				delete(until, rec.Partition)
			}
		})
	}
	return out, nil
}
