package relay

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pglogrepl"
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

func (s *cdcSession) deleteRows(ctx context.Context, ids []string) error {
	sql := fmt.Sprintf(`DELETE FROM %s WHERE id = ANY($1::text[]::uuid[])`, quoteTable(s.r.cfg.Table))
	if _, err := s.conn.Exec(ctx, sql, ids); err != nil {
		return fmt.Errorf("relay: delete %d relayed rows: %w", len(ids), err)
	}
	return nil
}

func (s *cdcSession) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.failed = err
	}
}
