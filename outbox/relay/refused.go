package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/kafkaerr"
	"github.com/exactly-go/exactly/internal/wire"
)

// ReasonProduction is the exactly.error.reason of the dead letter of a row
// whose record the broker refuses for good (the same as
// exactly.ReasonProduction).
const ReasonProduction = wire.ReasonProduction

// ErrRowRefused is wrapped by Run's error when the broker refuses an outbox
// row's record for good (too large for the topic, a timestamp out of the
// topic's bounds, an invalid record) and the relay has no DeadLetterTopic,
// or the dead-letter topic refuses it too. The row stays in the outbox and
// the relay confirms nothing past it.
var ErrRowRefused = errors.New("the broker refuses the outbox row for good")

// pending is one outbox row's record on its way to Kafka, kept while it
// may have to be produced again. After a refusal for good the relay cannot
// tell from the errors which record is at fault: a broker refuses a whole
// batch, and franz-go fails with it every record buffered behind it for
// the same partition. So it produces the refused records again one at a
// time: one refused alone is at fault.
type pending struct {
	id    string      // the row's event id, for messages
	rec   *kgo.Record // as first produced; produced again as a copy
	since time.Time   // the row's commit (CDC) or creation (poll) time, for the latency metric
	txn   *txnState   // CDC: the row's database transaction
	seq   uint64      // CDC: produce order in the session
	// unroutable: rec is already the row's dead letter (reason
	// unroutable).
	unroutable bool

	// Written by produce callbacks, read after the relay waited for them.
	err     error // the last refusal for good of the record, or of a batch it was in
	suspect bool  // refused once: from then on produced alone
	acked   bool  // non-transactional: acknowledged after a record of its aggregate was refused

	atFault      bool // refused alone: counted in outbox_relay_refused_rows_total
	deadLettered bool // its dead letter stands for it
	again        bool // published a second time, after the refused record's batch-mates
}

// aggregate names what orders records: one key of one topic. Records
// without a key ("") have no order to keep.
func (p *pending) aggregate() string {
	if p.rec.Key == nil {
		return ""
	}
	return p.rec.Topic + "\x00" + string(p.rec.Key)
}

// copyRecord is a fresh record with rec's content, for producing again.
func copyRecord(rec *kgo.Record) *kgo.Record {
	return &kgo.Record{Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Headers: rec.Headers, Timestamp: rec.Timestamp}
}

// produceAll produces items and waits for Kafka's answer to each. A
// refusal for good is noted on its item (refused reports one); any other
// failure is returned, naming its row.
func (r *Relay) produceAll(ctx context.Context, items []*pending) (refused bool, err error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(len(items))
	for _, p := range items {
		r.client.Produce(ctx, p.rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			p.err = err
		})
	}
	if err := r.client.Flush(ctx); err != nil {
		return false, fmt.Errorf("relay: publish %d records: %w", len(items), err)
	}
	wg.Wait() // Flush waited for every buffered record: this is quick
	for _, p := range items {
		switch {
		case p.err == nil:
		case kafkaerr.RefusedForGood(p.err):
			p.suspect, refused = true, true
		default:
			return false, fmt.Errorf("relay: publish outbox row %s: %w", p.id, p.err)
		}
	}
	return refused, nil
}

// afterRefusal picks, from items in produce order of which some were
// refused, those to produce again without a transaction: the refused
// ones, and every acknowledged one that follows a refused one of its
// aggregate. Kafka acknowledges a record produced after franz-go failed
// the records of its partition: it overtook them.
func afterRefusal(items []*pending) []*pending {
	var again []*pending
	held := map[string]bool{}
	for _, p := range items {
		switch {
		case p.suspect:
			again = append(again, p)
			if a := p.aggregate(); a != "" {
				held[a] = true
			}
		case held[p.aggregate()]:
			p.acked = true
			again = append(again, p)
		}
	}
	return again
}

// errRefusedAgain says that a record produced with others while redoing a
// transaction was refused: the transaction is redone again, with that
// record alone too.
var errRefusedAgain = errors.New("relay: a record was refused while redoing the kafka transaction")

// publishCarefully produces items again in order after a refusal,
// producing each suspect alone: one refused alone is at fault and goes to
// the dead-letter topic instead (or the relay stops with ErrRowRefused).
//
// In a transaction (transactional; the caller began it) every item is
// produced; those not suspect go together, and one of them refused ends
// the attempt with errRefusedAgain. Without one, items are those of
// afterRefusal: a suspect is produced alone, and an acknowledged record
// that overtook a suspect of its aggregate is produced again (a duplicate)
// if that suspect was published, so that the aggregate's last records are
// in order.
func (r *Relay) publishCarefully(ctx context.Context, items []*pending, transactional bool) error {
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		failed  error
		refused bool
	)
	settle := func() error {
		if err := r.client.Flush(ctx); err != nil {
			return fmt.Errorf("relay: flush: %w", err)
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if failed != nil {
			return failed
		}
		if refused {
			return errRefusedAgain
		}
		return nil
	}
	moved := map[string]bool{} // aggregates of which a suspect was published
	for _, p := range items {
		switch {
		case p.suspect:
			if err := settle(); err != nil {
				return err
			}
			err := r.produceAlone(ctx, p.rec)
			switch {
			case err == nil:
				p.deadLettered = false
				if a := p.aggregate(); a != "" {
					moved[a] = true
				}
			case kafkaerr.RefusedForGood(err):
				p.err = err
				if err := r.deadLetterRefused(ctx, p); err != nil {
					return err
				}
			default:
				return fmt.Errorf("relay: publish outbox row %s: %w", p.id, err)
			}
		case transactional:
			wg.Add(1)
			r.client.Produce(ctx, copyRecord(p.rec), func(_ *kgo.Record, err error) {
				defer wg.Done()
				if err == nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				switch {
				case kafkaerr.RefusedForGood(err):
					p.err, p.suspect, refused = err, true, true
				case failed == nil:
					failed = fmt.Errorf("relay: publish outbox row %s: %w", p.id, err)
				}
			})
		case p.acked && moved[p.aggregate()]:
			if err := r.produceAlone(ctx, p.rec); err != nil {
				return fmt.Errorf("relay: publish outbox row %s again: %w", p.id, err)
			}
			p.again = true
			r.metrics.republished.Inc()
			r.log.Warn("outbox row published again, after rows of its aggregate that a refused row's batch held back, to keep their order (a duplicate)",
				"id", p.id, "topic", p.rec.Topic)
		}
	}
	return settle()
}

// redoTransaction aborts the open Kafka transaction, in which a record was
// refused, and publishes items again in a new one with publishCarefully,
// until no record is refused but alone. It leaves the transaction open for
// the caller to commit. Every round makes at least one more record a
// suspect, so it ends.
func (r *Relay) redoTransaction(ctx context.Context, items []*pending) error {
	for {
		if err := r.client.EndTransaction(ctx, kgo.TryAbort); err != nil {
			return fmt.Errorf("relay: abort the kafka transaction of a refused record: %w", err)
		}
		if err := r.client.BeginTransaction(); err != nil {
			return fmt.Errorf("relay: begin kafka transaction: %w", err)
		}
		if err := r.publishCarefully(ctx, items, true); !errors.Is(err, errRefusedAgain) {
			return err
		}
	}
}

// produceAlone produces rec (a copy) and waits for Kafka's answer. The
// caller makes sure nothing else is in flight, so that a refusal is this
// record's own.
func (r *Relay) produceAlone(ctx context.Context, rec *kgo.Record) error {
	var err error
	answered := make(chan struct{})
	r.client.Produce(ctx, copyRecord(rec), func(_ *kgo.Record, e error) {
		err = e
		close(answered)
	})
	if err := r.client.Flush(ctx); err != nil {
		return err
	}
	select {
	case <-answered:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// deadLetterRefused publishes the dead letter of p, whose record the
// broker refused alone (p.err), or says why it cannot.
func (r *Relay) deadLetterRefused(ctx context.Context, p *pending) error {
	if !p.atFault {
		p.atFault = true
		r.metrics.refused.Inc()
	}
	topic := r.cfg.DeadLetterTopic
	if topic == "" {
		return fmt.Errorf("relay: outbox row %s to %s: %w: %w (Config.DeadLetterTopic would set it aside and go on; the row stays in the outbox)",
			p.id, p.rec.Topic, ErrRowRefused, p.err)
	}
	dl := p.rec // an unroutable row's dead letter, refused
	if !p.unroutable {
		dl = r.refusedDeadLetter(p)
		err := r.produceAlone(ctx, dl)
		if err == nil || !kafkaerr.RefusedForGood(err) || dl.Value == nil {
			return r.deadLettered(p, dl, err)
		}
		p.err = err
	}
	// The dead-letter topic refuses it too: its value is the likely cause.
	dl = withoutValue(dl, p.err)
	return r.deadLettered(p, dl, r.produceAlone(ctx, dl))
}

// deadLettered notes the outcome of publishing dl, the dead letter of p.
func (r *Relay) deadLettered(p *pending, dl *kgo.Record, err error) error {
	switch {
	case err == nil:
		p.deadLettered = true
		r.log.Warn("outbox row dead-lettered: the broker refuses it", "id", p.id, "topic", p.rec.Topic,
			"dead_letter_topic", dl.Topic, "bytes", len(p.rec.Key)+len(p.rec.Value), "err", p.err)
		return nil
	case kafkaerr.RefusedForGood(err):
		return fmt.Errorf("relay: outbox row %s: the dead-letter topic %s refuses its dead letter too: %w: %w", p.id, dl.Topic, ErrRowRefused, err)
	default:
		return fmt.Errorf("relay: dead letter of outbox row %s to %s: %w", p.id, dl.Topic, err)
	}
}

// refusedDeadLetter is the dead letter of p's refused record: the record
// (key, value, headers) on the dead-letter topic, with the dead-letter
// headers saying why. Its timestamp is the time of publishing: the
// record's own may be why it was refused.
func (r *Relay) refusedDeadLetter(p *pending) *kgo.Record {
	message := fmt.Sprintf("the broker refuses the record to %s for good: %v", p.rec.Topic, p.err)
	if errors.Is(p.err, kerr.InvalidTimestamp) {
		message += fmt.Sprintf(" (record timestamp %s)", p.rec.Timestamp.UTC().Format(time.RFC3339Nano))
	}
	headers := make([]kgo.RecordHeader, 0, len(p.rec.Headers)+2)
	headers = append(headers, p.rec.Headers...)
	headers = append(headers,
		kgo.RecordHeader{Key: wire.HeaderErrorReason, Value: []byte(ReasonProduction)},
		kgo.RecordHeader{Key: wire.HeaderErrorMessage, Value: []byte(message)})
	return &kgo.Record{Topic: r.cfg.DeadLetterTopic, Key: p.rec.Key, Value: p.rec.Value, Headers: headers}
}

// withoutValue is dl without its value, its message saying so.
func withoutValue(dl *kgo.Record, cause error) *kgo.Record {
	out := &kgo.Record{Topic: dl.Topic, Key: dl.Key, Headers: slices.Clone(dl.Headers)}
	note := fmt.Sprintf(" (value of %d bytes dropped: the broker refused the dead letter with it: %v)", len(dl.Value), cause)
	for i, h := range out.Headers {
		if h.Key == wire.HeaderErrorMessage {
			out.Headers[i].Value = append(slices.Clip(h.Value), note...)
		}
	}
	return out
}
