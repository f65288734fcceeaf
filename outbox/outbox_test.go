package outbox

import (
	"context"
	"errors"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/exactly-go/exactly/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	if err := Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, conn); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	return conn
}

func TestWriteCommitsWithTheCallersTransactionOnly(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	payload := `{"orderId": "o-1",   "b": 1, "a": [2, 1]}` // odd spacing and key order must survive
	for _, commit := range []bool{false, true} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		id, err := Write(ctx, tx, Event{AggregateType: "order", AggregateID: "o-1", EventType: "OrderCreated",
			Payload: []byte(payload), Headers: map[string]string{"traceId": "t-1"}})
		if err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		var n int
		var gotPayload, gotHeaders string
		if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(max(payload::text), ''), coalesce(max(headers::text), '') FROM outbox WHERE id = $1::uuid`, id).Scan(&n, &gotPayload, &gotHeaders); err != nil {
			t.Fatal(err)
		}
		want := 0
		if commit {
			want = 1
		}
		if n != want {
			t.Fatalf("commit=%v: rows with id %s = %d, want %d", commit, id, n, want)
		}
		if commit && (gotPayload != payload || gotHeaders != `{"traceId":"t-1"}`) {
			t.Fatalf("stored payload %q headers %q; want %q and the trace header", gotPayload, gotHeaders, payload)
		}
	}
}

func TestWriteRejectsIncompleteEvents(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	ok := Event{AggregateType: "order", AggregateID: "o-1", EventType: "OrderCreated", Payload: []byte(`{}`)}
	for name, mutate := range map[string]func(*Event){
		"no aggregate type": func(e *Event) { e.AggregateType = "" },
		"no aggregate id":   func(e *Event) { e.AggregateID = "" },
		"no event type":     func(e *Event) { e.EventType = "" },
		"payload not JSON":  func(e *Event) { e.Payload = []byte("{") },
	} {
		e := ok
		mutate(&e)
		if _, err := Write(ctx, conn, e); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: err = %v, want ErrInvalidEvent", name, err)
		}
	}
}

func TestGivenIDIsKeptAndADuplicateIDFails(t *testing.T) {
	ctx := context.Background()
	conn := connect(t)
	e := Event{ID: "0190c3b2-0000-7000-8000-000000000001", AggregateType: "order", AggregateID: "o-1", EventType: "OrderCreated", Payload: []byte(`{}`)}
	id, err := Write(ctx, conn, e)
	if err != nil || id != e.ID {
		t.Fatalf("Write = %q, %v; want the given id", id, err)
	}
	if _, err := Write(ctx, conn, e); err == nil {
		t.Fatal("second write of the same id succeeded")
	}
}

func TestNewIDIsAVersion7UUID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("NewID() = %q: not a fresh version 7 UUID", id)
		}
		seen[id] = true
	}
}
