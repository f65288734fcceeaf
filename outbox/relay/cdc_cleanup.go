package relay

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// cleaner deletes relayed rows off the receive loop, so a large deletion
// never delays decoding. Positions are confirmed only once the rows below
// them are deleted.
type cleaner struct {
	mu      sync.Mutex
	pending []string      // relayed ids not yet deleted
	upTo    pglogrepl.LSN // pending holds the rows of transactions up to here
	done    pglogrepl.LSN // rows of transactions up to here are deleted
	busy    bool
	wake    chan struct{}
	stopped chan struct{}
}

// clean deletes what confirm hands over until ctx ends. A failed deletion
// fails the session: the slot then sends the rows again, and they are
// deleted next time.
func (s *cdcSession) clean(ctx context.Context) {
	c := &s.cleaner
	defer close(c.stopped)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		for {
			c.mu.Lock()
			ids, upTo := c.pending, c.upTo
			c.pending = nil
			c.busy = len(ids) > 0
			c.mu.Unlock()
			if len(ids) == 0 {
				break
			}
			err := s.deleteRows(ctx, ids)
			c.mu.Lock()
			c.busy = false
			if err == nil {
				c.done = upTo
			}
			c.mu.Unlock()
			if err != nil {
				if ctx.Err() == nil {
					s.fail(err)
				}
				return
			}
		}
	}
}

// visibilityWait bounds how long deleteRows waits for relayed rows to
// become visible. Logical decoding can send a transaction a moment before
// its commit is visible to other sessions; a row still missing after this
// long was deleted by its writer (insert and delete in one transaction).
const visibilityWait = 2 * time.Second

// deleteRows deletes the relayed rows ids. Rows not yet visible are waited
// for, up to visibilityWait.
func (s *cdcSession) deleteRows(ctx context.Context, ids []string) error {
	sql := s.table.deleteByKey
	deadline := time.Now().Add(visibilityWait)
	for {
		rows, err := s.conn.Query(ctx, sql, ids)
		if err != nil {
			return fmt.Errorf("relay: delete %d relayed rows: %w", len(ids), err)
		}
		deleted, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("relay: delete %d relayed rows: %w", len(ids), err)
		}
		if len(deleted) == len(ids) || time.Now().After(deadline) {
			return nil
		}
		gone := make(map[string]bool, len(deleted))
		for _, id := range deleted {
			gone[id] = true
		}
		var missing []string
		for _, id := range ids {
			if !gone[id] {
				missing = append(missing, id)
			}
		}
		ids = missing
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *cdcSession) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.failed = err
	}
}
