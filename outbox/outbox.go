// Package outbox writes events to a transactional outbox table in PostgreSQL,
// inside the caller's transaction, so that an event exists if and only if
// the business change that produced it committed.
//
// A relay (package outbox/relay) publishes the committed rows to Kafka: the
// topic comes from the aggregate type, the key is the aggregate id, the value
// is the payload's bytes unchanged, and the headers carry the event id and
// type. Delivery is at least once: consumers deduplicate by the "id" header
// (package inbox does).
package outbox

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// SchemaSQL creates the outbox table and its index. It is idempotent;
// Migrate runs it, and operators can run it by hand instead.
//
//go:embed schema.sql
var SchemaSQL string

// Execer is what Write needs: pgx.Tx satisfies it. Pass the transaction of the
// business change; a connection or pool would commit the event on its own.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Migrate creates the outbox schema (SchemaSQL) if it does not exist yet.
func Migrate(ctx context.Context, db Execer) error {
	if _, err := db.Exec(ctx, SchemaSQL); err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	return nil
}

// Event is one row of the outbox.
type Event struct {
	// ID identifies the event for deduplication downstream. Empty: Write
	// generates a time-ordered UUID (version 7). Set it to derive the id from
	// the input (a retried request then writes the same id).
	ID string
	// AggregateType routes the event: the relay's topic comes from it
	// (default "<AggregateType>.events").
	AggregateType string
	// AggregateID becomes the Kafka key: one aggregate's events share a
	// partition and keep their commit order.
	AggregateID string
	// EventType is published in the "eventType" header.
	EventType string
	// Payload is a JSON document, published byte for byte.
	Payload []byte
	// Headers are published as extra Kafka headers.
	Headers map[string]string
}

// ErrInvalidEvent is returned for an event Write refuses.
var ErrInvalidEvent = errors.New("outbox: invalid event")

const insert = `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, headers)
VALUES ($1::uuid, $2, $3, $4, $5::json, $6::json)`

// Write adds event to the outbox through tx and returns its id. The event is
// published only if tx commits. Lock the aggregate (e.g. SELECT ... FOR
// UPDATE on its row) before writing its events: concurrent transactions of
// one aggregate then publish in commit order with either relay.
func Write(ctx context.Context, tx Execer, event Event) (string, error) {
	switch {
	case event.AggregateType == "":
		return "", fmt.Errorf("%w: empty AggregateType", ErrInvalidEvent)
	case event.AggregateID == "":
		return "", fmt.Errorf("%w: empty AggregateID", ErrInvalidEvent)
	case event.EventType == "":
		return "", fmt.Errorf("%w: empty EventType", ErrInvalidEvent)
	case !json.Valid(event.Payload):
		return "", fmt.Errorf("%w: payload of %s %s is not JSON", ErrInvalidEvent, event.AggregateType, event.AggregateID)
	}
	id := event.ID
	if id == "" {
		id = NewID()
	}
	var headers []byte // nil stores NULL
	if len(event.Headers) > 0 {
		var err error
		if headers, err = json.Marshal(event.Headers); err != nil {
			return "", fmt.Errorf("outbox: encode headers: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, insert, id, event.AggregateType, event.AggregateID, event.EventType, string(event.Payload), nullable(headers)); err != nil {
		return "", fmt.Errorf("outbox: write %s event %s of %s %s: %w", event.EventType, id, event.AggregateType, event.AggregateID, err)
	}
	return id, nil
}

func nullable(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// NewID returns a random UUID of version 7: its first 48 bits are the Unix
// time in milliseconds, so ids sort roughly by creation time and index
// inserts stay local.
func NewID() string {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		panic(fmt.Sprintf("outbox: crypto/rand: %v", err)) // never fails on supported platforms
	}
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(time.Now().UnixMilli()))
	copy(u[:6], ms[2:])
	u[6] = u[6]&0x0f | 0x70 // version 7
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}
