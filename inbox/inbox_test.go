package inbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/exactly-go/exactly/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newPool returns a pool on a fresh database holding the inbox schema and an
// effects table with no unique key, so a repeated effect shows as an extra row.
func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE effects (event_id text NOT NULL, applied_at timestamptz DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	return pool
}

// recordEffect is an effect that writes one row per run and answers with a
// response derived from the id.
func recordEffect(id string) Effect {
	return func(ctx context.Context, tx pgx.Tx) ([]byte, error) {
		if _, err := tx.Exec(ctx, `INSERT INTO effects (event_id) VALUES ($1)`, id); err != nil {
			return nil, err
		}
		return []byte("done:" + id), nil
	}
}

func countEffects(t testing.TB, pool *pgxpool.Pool) (rows, distinct int) {
	t.Helper()
	if err := pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT event_id) FROM effects`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}

func TestMigrateIsIdempotent(t *testing.T) {
	pool := newPool(t)
	if err := Migrate(context.Background(), pool); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
}

func TestThreeDeliveriesRunOneEffectAndReturnStoredResponseTwice(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	reg := prometheus.NewRegistry()
	in := New(pool, "payments", Options{Registerer: reg})
	var results []Result
	for range 3 {
		r, err := in.Process(ctx, "e-1", recordEffect("e-1"))
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, r)
	}
	if rows, _ := countEffects(t, pool); rows != 1 {
		t.Fatalf("effects = %d, want 1", rows)
	}
	if results[0].Duplicate || !results[1].Duplicate || !results[2].Duplicate {
		t.Fatalf("duplicate flags = %v %v %v, want false true true", results[0].Duplicate, results[1].Duplicate, results[2].Duplicate)
	}
	for i, r := range results {
		if string(r.Response) != "done:e-1" {
			t.Fatalf("delivery %d response = %q, want %q", i, r.Response, "done:e-1")
		}
	}
	for name, want := range map[string]float64{"inbox_events_processed_total": 1, "inbox_duplicates_skipped_total": 2} {
		if got := counterValue(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// counterValue reads the counter called name from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, err := metrics.Sum(reg, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestConsumerGroupsAreIndependent(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	for _, group := range []string{"a", "b"} {
		if _, err := New(pool, group, Options{}).Process(ctx, "e-1", recordEffect("e-1")); err != nil {
			t.Fatal(err)
		}
	}
	if rows, _ := countEffects(t, pool); rows != 2 {
		t.Fatalf("effects = %d, want one per group (2)", rows)
	}
}

func TestFailedEffectRecordsNothingAndRunsAgain(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	in := New(pool, "payments", Options{})
	boom := errors.New("gateway down")
	_, err := in.Process(ctx, "e-1", func(ctx context.Context, tx pgx.Tx) ([]byte, error) {
		if _, err := recordEffect("e-1")(ctx, tx); err != nil {
			return nil, err
		}
		return nil, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	r, err := in.Process(ctx, "e-1", recordEffect("e-1"))
	if err != nil || r.Duplicate {
		t.Fatalf("retry after failure: result %+v, err %v; want a fresh run", r, err)
	}
	if rows, _ := countEffects(t, pool); rows != 1 {
		t.Fatalf("effects = %d, want 1 (the failed run rolled back)", rows)
	}
}

func TestConcurrentDuplicatesOf500EventsRun500Effects(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	in := New(pool, "payments", Options{})
	const n = 500
	var wg sync.WaitGroup
	var mu sync.Mutex
	duplicates := 0
	errs := make(chan error, 2)
	start := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			<-start
			for i := range n {
				id := fmt.Sprintf("e-%d", i)
				r, err := in.Process(ctx, id, recordEffect(id))
				if err != nil {
					errs <- err
					return
				}
				if r.Duplicate {
					mu.Lock()
					duplicates++
					mu.Unlock()
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rows, distinct := countEffects(t, pool)
	if rows != n || distinct != n {
		t.Fatalf("effects = %d rows, %d distinct; want %d each", rows, distinct, n)
	}
	if duplicates != n {
		t.Fatalf("duplicates = %d, want %d", duplicates, n)
	}
}

func TestBatchWithDuplicatesInsideRunsOneEffectEach(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	in := New(pool, "payments", Options{})
	if _, err := in.Process(ctx, "d", recordEffect("d")); err != nil {
		t.Fatal(err)
	}
	ids := []string{"a", "b", "a", "c", "b", "a", "d"}
	results, err := in.ProcessBatch(ctx, ids, func(ctx context.Context, tx pgx.Tx, i int) ([]byte, error) {
		return recordEffect(ids[i])(ctx, tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	wantDuplicate := []bool{false, false, true, false, true, true, true}
	for i, r := range results {
		if r.Duplicate != wantDuplicate[i] {
			t.Errorf("ids[%d]=%s duplicate = %v, want %v", i, ids[i], r.Duplicate, wantDuplicate[i])
		}
		if want := "done:" + ids[i]; string(r.Response) != want {
			t.Errorf("ids[%d]=%s response = %q, want %q", i, ids[i], r.Response, want)
		}
	}
	rows, distinct := countEffects(t, pool)
	if rows != 4 || distinct != 4 {
		t.Fatalf("effects = %d rows, %d distinct; want 4 each (a, b, c, d)", rows, distinct)
	}
}

func TestConcurrentOverlappingBatchesRunOneEffectEach(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	in := New(pool, "payments", Options{})
	const n, batch = 600, 50
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("e-%03d", i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for w := range 3 {
		wg.Go(func() {
			// Each worker walks the ids in its own order and batch
			// alignment, so batches overlap partially.
			offset := w * batch / 3
			order := make([]string, 0, n)
			for i := range n {
				order = append(order, ids[(i*(w+1)+offset)%n])
			}
			for start := 0; start < n; start += batch {
				chunk := order[start:min(start+batch, n)]
				for {
					_, err := in.ProcessBatch(ctx, chunk, func(ctx context.Context, tx pgx.Tx, i int) ([]byte, error) {
						return recordEffect(chunk[i])(ctx, tx)
					})
					if err == nil {
						break
					}
					if !Transient(err) {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	rows, distinct := countEffects(t, pool)
	if rows != n || distinct != n {
		t.Fatalf("effects = %d rows, %d distinct; want %d each", rows, distinct, n)
	}
}

func TestDeleteOlderThanRemovesOnlyExpiredKeysOfTheGroup(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	in, other := New(pool, "payments", Options{}), New(pool, "other", Options{})
	for i := range 30 {
		id := fmt.Sprintf("e-%d", i)
		for _, x := range []*Inbox{in, other} {
			if _, err := x.Process(ctx, id, recordEffect(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := pool.Exec(ctx, `UPDATE processed_events SET processed_at = now() - interval '2 days' WHERE event_id < 'e-2'`); err != nil {
		t.Fatal(err)
	}
	deleted, err := in.DeleteOlderThan(ctx, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// e-0, e-1, e-10 … e-19 sort before "e-2": 12 keys of this group.
	if deleted != 12 {
		t.Fatalf("deleted = %d, want 12", deleted)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM processed_events WHERE consumer_group = 'other'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 30 {
		t.Fatalf("other group's keys = %d, want 30 untouched", left)
	}
	// An expired key is processed again on redelivery: that is the window's contract.
	r, err := in.Process(ctx, "e-0", recordEffect("e-0"))
	if err != nil || r.Duplicate {
		t.Fatalf("redelivery after retention: %+v, %v; want a fresh run", r, err)
	}
}

func TestEmptyEventIDIsRejected(t *testing.T) {
	pool := newPool(t)
	in := New(pool, "payments", Options{})
	if _, err := in.Process(context.Background(), "", recordEffect("")); !errors.Is(err, ErrEmptyEventID) {
		t.Fatalf("err = %v, want ErrEmptyEventID", err)
	}
	if _, err := in.ProcessBatch(context.Background(), []string{"a", ""}, nil); !errors.Is(err, ErrEmptyEventID) {
		t.Fatalf("batch err = %v, want ErrEmptyEventID", err)
	}
}
