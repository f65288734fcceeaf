package relay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/kafkaerr"
)

// txnState is one decoded database transaction on its way to Kafka.
type txnState struct {
	endLSN      pglogrepl.LSN // confirmable once everything here is durable in Kafka
	commitTime  time.Time
	committed   bool // its Commit message arrived
	records     int  // records produced for it
	outstanding int  // of those, not yet acknowledged
	kafkaTxnEnd bool // transactional mode: the Kafka transaction holding it committed
	unsettled   int  // non-transactional: records refused and not yet published again or dead-lettered
	ids         []string
}

// cdcSession is one replication connection's worth of relaying. Produce
// callbacks run on the Kafka client's goroutines and meet the receive loop
// under mu.
type cdcSession struct {
	r    *Relay
	conn *pgx.Conn // for setup and cleanup
	repl *pgconn.PgConn

	table     *table
	relations map[uint32]*layout // the outbox's relations; nil for others
	open      *txnState          // between Begin and Commit

	mu        sync.Mutex
	queue     []*txnState // in commit order, not yet confirmed
	failed    error
	confirmed pglogrepl.LSN
	serverEnd pglogrepl.LSN
	// refused is set when the broker refused a record for good; the
	// receive loop then publishes again (settle) before reading on.
	refused bool
	// unsettled are, without Kafka transactions, the refused records and
	// those acknowledged after a refused record of their aggregate; held
	// are the aggregates of the refused ones.
	unsettled []*pending
	held      map[string]bool

	inflight sync.WaitGroup // produce callbacks to come
	seq      uint64         // records produced
	// inTxn are the records of the open Kafka transaction, in produce
	// order: all are published again if one is refused.
	inTxn []*pending

	kafkaTxnOpen    bool
	kafkaTxnStarted time.Time

	sent    pglogrepl.LSN // last position confirmed to the slot
	cleaner cleaner
}

func (r *Relay) runCDC(ctx context.Context) error {
	conn, err := r.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	table, err := r.inspectTable(ctx, conn)
	if err != nil {
		return err
	}
	if err := r.ensurePublication(ctx, conn); err != nil {
		return err
	}

	replCfg, err := pgconn.ParseConfig(r.cfg.DSN)
	if err != nil {
		return fmt.Errorf("relay: DSN: %w", err)
	}
	for k, v := range sessionParams {
		replCfg.RuntimeParams[k] = v
	}
	replCfg.RuntimeParams["replication"] = "database"
	repl, err := pgconn.ConnectConfig(ctx, replCfg)
	if err != nil {
		return fmt.Errorf("relay: replication connection: %w", err)
	}
	defer repl.Close(context.Background())

	snapshot, err := r.ensureSlot(ctx, conn, repl)
	if err != nil {
		return err
	}
	if err := r.backfill(ctx, conn, table, snapshot); err != nil {
		return err
	}
	err = pglogrepl.StartReplication(ctx, repl, r.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", fmt.Sprintf("publication_names '%s'", r.cfg.Publication)},
	})
	if err != nil {
		return fmt.Errorf("relay: start replication on slot %s: %w", r.cfg.Slot, err)
	}
	s := &cdcSession{r: r, conn: conn, repl: repl, table: table, relations: map[uint32]*layout{}, held: map[string]bool{}}
	cleanCtx, stopCleaner := context.WithCancel(ctx)
	s.cleaner.wake, s.cleaner.stopped = make(chan struct{}, 1), make(chan struct{})
	go s.clean(cleanCtx)
	err = s.receive(ctx)
	if err != nil && ctx.Err() == nil {
		s.fail(err) // the shutdown must not commit or confirm what the session left half done
	}
	stopCleaner()
	<-s.cleaner.stopped
	s.shutdown()
	return err
}

// receive decodes the replication stream until an error or ctx's end.
func (s *cdcSession) receive(ctx context.Context) error {
	cfg := s.r.cfg
	nextStatus := time.Now().Add(cfg.StatusInterval)
	for {
		if err := s.err(); err != nil {
			return err
		}
		if err := s.settle(ctx); err != nil {
			return err
		}
		if err := s.maybeCommitKafka(ctx, s.refusal()); err != nil {
			return err
		}
		if !time.Now().Before(nextStatus) {
			if err := s.confirm(ctx, false); err != nil {
				return err
			}
			nextStatus = time.Now().Add(cfg.StatusInterval)
		}
		deadline := nextStatus
		if t := s.kafkaTxnDeadline(); !t.IsZero() && t.Before(deadline) {
			deadline = t
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		msg, err := s.repl.ReceiveMessage(rctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("relay: receive: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("relay: replication: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyData:
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("relay: keepalive: %w", err)
				}
				s.sawServerEnd(ka.ServerWALEnd)
				if ka.ReplyRequested {
					nextStatus = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("relay: xlog data: %w", err)
				}
				if err := s.handle(ctx, xld.WALData); err != nil {
					return err
				}
			}
		}
	}
}

// handle processes one pgoutput message. Tuple bytes alias the connection's
// read buffer, so everything kept is copied.
func (s *cdcSession) handle(ctx context.Context, walData []byte) error {
	msg, err := pglogrepl.Parse(walData)
	if err != nil {
		return fmt.Errorf("relay: decode pgoutput: %w", err)
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		s.relations[m.RelationID] = nil
		if s.r.isOutbox(m) {
			s.relations[m.RelationID] = s.table.layoutOf(s.r.router, m)
		}
	case *pglogrepl.BeginMessage:
		s.open = &txnState{commitTime: m.CommitTime}
		s.mu.Lock()
		s.queue = append(s.queue, s.open)
		s.mu.Unlock()
	case *pglogrepl.InsertMessage:
		l := s.relations[m.RelationID]
		if l == nil || s.open == nil {
			return nil
		}
		return s.produce(ctx, s.r.router.tupleRow(l, m.Tuple))
	case *pglogrepl.CommitMessage:
		if s.open == nil {
			return errors.New("relay: commit without begin in the replication stream")
		}
		s.mu.Lock()
		s.open.endLSN = m.TransactionEndLSN
		s.open.committed = true
		s.mu.Unlock()
		s.open = nil
		return s.maybeCommitKafka(ctx, false)
	}
	return nil
}

// isOutbox reports whether a relation of the replication stream is the
// outbox table.
func (r *Relay) isOutbox(m *pglogrepl.RelationMessage) bool {
	table := r.cfg.Table
	if i := strings.LastIndexByte(table, '.'); i >= 0 {
		if m.Namespace != table[:i] {
			return false
		}
		table = table[i+1:]
	}
	return m.RelationName == table
}

func (s *cdcSession) produce(ctx context.Context, row row) error {
	rec, unroutable, err := s.r.routeRecord(row)
	if err != nil {
		return err
	}
	transactional := s.r.cfg.TransactionalID != ""
	if transactional && !s.kafkaTxnOpen {
		if err := s.r.client.BeginTransaction(); err != nil {
			return fmt.Errorf("relay: begin kafka transaction: %w", err)
		}
		s.kafkaTxnOpen = true
		s.kafkaTxnStarted = time.Now()
	}
	t := s.open
	p := &pending{id: s.r.router.eventID(row), rec: rec, since: t.commitTime, txn: t, seq: s.seq, unroutable: unroutable}
	s.seq++
	if transactional {
		s.inTxn = append(s.inTxn, p)
	}
	s.mu.Lock()
	t.records++
	t.outstanding++
	if !s.r.cfg.KeepRows && row.deleteKey != "" {
		t.ids = append(t.ids, row.deleteKey)
	}
	s.mu.Unlock()
	s.inflight.Add(1)
	s.r.client.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		defer s.inflight.Done()
		s.answered(p, err, transactional)
	})
	return nil
}

// answered takes Kafka's answer for p's record. A refusal for good is kept
// for the receive loop to settle; any other failure fails the session.
func (s *cdcSession) answered(p *pending, err error, transactional bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := p.txn
	t.outstanding--
	switch {
	case err != nil && kafkaerr.RefusedForGood(err):
		p.err, p.suspect, s.refused = err, true, true
		if !transactional {
			t.unsettled++
			s.unsettled = append(s.unsettled, p)
			if a := p.aggregate(); a != "" {
				s.held[a] = true
			}
		}
	case err != nil:
		if s.failed == nil {
			s.failed = fmt.Errorf("relay: publish outbox row %s: %w", p.id, err)
		}
	case transactional:
		// Counted when its Kafka transaction commits.
	default:
		if len(s.held) > 0 && s.held[p.aggregate()] {
			// Produced after franz-go failed the records of its
			// partition: it overtook a refused record of its aggregate.
			p.acked = true
			s.unsettled = append(s.unsettled, p)
		}
		s.r.metrics.relayed(p)
	}
}

func (s *cdcSession) refusal() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// settle, without Kafka transactions, publishes again the records refused
// since the last settling, one by one, dead-lettering the one at fault,
// once Kafka answered for everything in flight. Their database
// transactions are confirmable after. The receive loop produces nothing
// meanwhile, so nothing else overtakes them.
func (s *cdcSession) settle(ctx context.Context) error {
	if s.r.cfg.TransactionalID != "" || !s.refusal() {
		return nil
	}
	if err := s.r.client.Flush(ctx); err != nil {
		return fmt.Errorf("relay: flush: %w", err)
	}
	s.inflight.Wait() // Flush waited for every buffered record: this is quick
	if err := s.err(); err != nil {
		return err
	}
	s.mu.Lock()
	items := s.unsettled
	s.unsettled, s.held, s.refused = nil, map[string]bool{}, false
	s.mu.Unlock()
	slices.SortFunc(items, func(a, b *pending) int { return cmp.Compare(a.seq, b.seq) })
	if err := s.r.publishCarefully(ctx, items, false); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range items {
		if p.suspect {
			p.txn.unsettled--
			s.r.metrics.relayed(p)
		}
	}
	return nil
}

func (s *cdcSession) kafkaTxnDeadline() time.Time {
	if !s.kafkaTxnOpen || s.open != nil {
		return time.Time{} // a half-read database transaction finishes first
	}
	return s.kafkaTxnStarted.Add(s.r.cfg.TransactionInterval)
}

// maybeCommitKafka commits the open Kafka transaction when it is due (or
// force is set) and no database transaction is half-read, so a Kafka
// transaction always holds whole database transactions.
func (s *cdcSession) maybeCommitKafka(ctx context.Context, force bool) error {
	if !s.kafkaTxnOpen || s.open != nil {
		return nil
	}
	if !force && time.Now().Before(s.kafkaTxnDeadline()) {
		return nil
	}
	if err := s.r.client.Flush(ctx); err != nil {
		return fmt.Errorf("relay: flush kafka transaction: %w", err)
	}
	s.inflight.Wait() // Flush waited for every buffered record: this is quick
	if err := s.err(); err != nil {
		return err
	}
	if s.refusal() {
		if err := s.r.redoTransaction(ctx, s.inTxn); err != nil {
			return err // still refused: a shutdown redoes it, or commits nothing
		}
		s.mu.Lock()
		s.refused = false
		s.mu.Unlock()
	}
	if err := s.r.client.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("relay: commit kafka transaction: %w", err)
	}
	s.kafkaTxnOpen = false
	for _, p := range s.inTxn {
		s.r.metrics.relayed(p)
	}
	s.inTxn = nil
	s.mu.Lock()
	for _, t := range s.queue {
		if t.committed {
			t.kafkaTxnEnd = true
		}
	}
	s.mu.Unlock()
	return nil
}

func (s *cdcSession) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// sawServerEnd notes the server's WAL position from a keepalive. When
// nothing is in flight, everything before it has been relayed, so the slot
// may advance there too: otherwise WAL of unrelated tables piles up.
func (s *cdcSession) sawServerEnd(end pglogrepl.LSN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if end > s.serverEnd {
		s.serverEnd = end
	}
	if len(s.queue) == 0 && s.open == nil && !s.kafkaTxnOpen && end > s.confirmed {
		s.confirmed = end
	}
}

// confirm hands the rows of every transaction Kafka holds durably, in
// commit order, to the cleaner, and confirms to the slot the position up to
// which those rows are deleted. Deleting before confirming means a crash in
// between republishes rows (duplicates) but never leaves relayed rows
// behind. With wait, it deletes here instead (the cleaner has stopped).
func (s *cdcSession) confirm(ctx context.Context, wait bool) error {
	transactional := s.r.cfg.TransactionalID != ""
	s.mu.Lock()
	var ids []string
	durableUpTo := pglogrepl.LSN(0)
	done := 0
	for _, t := range s.queue {
		durable := t.committed && t.outstanding == 0 && t.unsettled == 0 && (!transactional || t.records == 0 || t.kafkaTxnEnd)
		if !durable {
			break
		}
		ids = append(ids, t.ids...)
		durableUpTo = t.endLSN
		done++
	}
	s.queue = s.queue[done:]
	if durableUpTo > s.confirmed {
		s.confirmed = durableUpTo
	}
	position := s.confirmed
	var oldest time.Time
	if len(s.queue) > 0 {
		oldest = s.queue[0].commitTime
	}
	lag := float64(0)
	if s.serverEnd > position {
		lag = float64(s.serverEnd - position)
	}
	s.mu.Unlock()
	s.r.metrics.setLag(lag, oldest)

	if !s.r.cfg.KeepRows {
		c := &s.cleaner
		c.mu.Lock()
		if len(ids) > 0 {
			c.pending = append(c.pending, ids...)
			c.upTo = durableUpTo
		}
		if wait && len(c.pending) > 0 {
			if err := s.deleteRows(ctx, c.pending); err != nil {
				c.mu.Unlock()
				return err
			}
			c.pending, c.done = nil, c.upTo
		}
		if len(c.pending) > 0 || c.busy {
			position = min(position, c.done)
		}
		c.mu.Unlock()
		if len(ids) > 0 && !wait {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	}
	// Rows below an earlier confirmed position were deleted before it was
	// sent: never go back.
	position = max(position, s.sent)
	if position == 0 {
		return nil
	}
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, pglogrepl.StandbyStatusUpdate{WALWritePosition: position}); err != nil {
		return fmt.Errorf("relay: confirm %s to slot %s: %w", position, s.r.cfg.Slot, err)
	}
	s.sent = position
	return nil
}

// shutdown waits briefly for Kafka's acknowledgements of what was sent and
// confirms them, so a clean stop leaves few duplicates for the next start.
func (s *cdcSession) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.r.cfg.TransactionalID != "" {
		if s.maybeCommitKafka(ctx, true) != nil {
			return
		}
	} else if s.settle(ctx) != nil || s.r.client.Flush(ctx) != nil {
		return
	}
	if s.repl.IsClosed() || s.err() != nil {
		return
	}
	if err := s.confirm(ctx, true); err != nil {
		s.r.log.Debug("final confirm failed", "err", err)
	}
}
