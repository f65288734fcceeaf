// Package shop is the end-to-end example of the PostgreSQL patterns: an
// orders HTTP service writes each order change and its event in one
// transaction (the transactional outbox); the relay publishes the events to
// Kafka; the order projection (package examples/orders, exactly-once)
// consumes the order events, and a payments consumer charges shipped orders
// through the inbox, once per payment event however often it is delivered.
//
// Order events go to aggregate type "order" (topic order.events by the
// relay's default routing) in the orders envelope of the wire contracts;
// payment requests go to aggregate type "payment" (topic payment.events) as
// {"eventId", "orderId", "amountCents", "currency"}.
package shop

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/inbox"
	"github.com/exactly-go/exactly/outbox"
)

// SchemaSQL creates the orders and payments tables.
//
//go:embed schema.sql
var SchemaSQL string

// Aggregate types, and so (by the relay's default routing) topics.
const (
	AggregateOrder   = "order"   // topic order.events
	AggregatePayment = "payment" // topic payment.events
)

// Migrate creates the shop's tables, the outbox and the inbox.
func Migrate(ctx context.Context, db *pgxpool.Pool) error {
	if _, err := db.Exec(ctx, SchemaSQL); err != nil {
		return fmt.Errorf("shop: migrate: %w", err)
	}
	if err := outbox.Migrate(ctx, db); err != nil {
		return err
	}
	return inbox.Migrate(ctx, db)
}

// Service is the orders HTTP service.
type Service struct {
	db  *pgxpool.Pool
	now func() time.Time
}

// NewService returns the service on db.
func NewService(db *pgxpool.Pool) *Service { return &Service{db: db, now: time.Now} }

// Handler serves:
//
//	POST /orders              {"orderId", "customerId"}    → 201 (200 if it exists)
//	PUT  /orders/{id}/items   {"items": [{"sku", "quantity", "priceCents"}]}
//	POST /orders/{id}/ship    {"trackingNumber"}           → also requests the payment
//	GET  /orders/{id}
//
// Every change commits with its events or not at all.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.create)
	mux.HandleFunc("PUT /orders/{id}/items", s.updateItems)
	mux.HandleFunc("POST /orders/{id}/ship", s.ship)
	mux.HandleFunc("GET /orders/{id}", s.get)
	return mux
}

// Order is a row of the orders table.
type Order struct {
	ID             string            `json:"orderId"`
	CustomerID     string            `json:"customerId"`
	Status         orders.Status     `json:"status"`
	Items          []orders.LineItem `json:"items"`
	AmountCents    int64             `json:"amountCents"`
	TrackingNumber string            `json:"trackingNumber"`
	CreatedAt      int64             `json:"createdAt"`
	UpdatedAt      int64             `json:"updatedAt"`
	ShippedAt      int64             `json:"shippedAt"`
	Version        int64             `json:"version"`
	LastEventID    string            `json:"lastEventId"`
	lastEventAt    int64
}

const selectOrder = `SELECT id, customer_id, status, items::text, amount_cents, tracking_number,
created_at, updated_at, shipped_at, version, last_event_id, last_event_at FROM orders WHERE id = $1`

// ReadOrder reads order id; with lock it holds the row until tx ends.
func ReadOrder(ctx context.Context, q pgx.Tx, id string, lock bool) (Order, error) {
	sql := selectOrder
	if lock {
		sql += " FOR UPDATE"
	}
	var o Order
	var items string
	err := q.QueryRow(ctx, sql, id).Scan(&o.ID, &o.CustomerID, &o.Status, &items, &o.AmountCents, &o.TrackingNumber,
		&o.CreatedAt, &o.UpdatedAt, &o.ShippedAt, &o.Version, &o.LastEventID, &o.lastEventAt)
	if err != nil {
		return o, err
	}
	if err := json.Unmarshal([]byte(items), &o.Items); err != nil {
		return o, fmt.Errorf("order %s items: %w", id, err)
	}
	return o, nil
}

// httpError is an error with the status to answer.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func (s *Service) serve(w http.ResponseWriter, r *http.Request, body any, change func(ctx context.Context, tx pgx.Tx) (int, any, error)) {
	if body != nil {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(body); err != nil {
			http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	var status int
	var answer any
	err := pgx.BeginFunc(r.Context(), s.db, func(tx pgx.Tx) error {
		var err error
		status, answer, err = change(r.Context(), tx)
		return err
	})
	var he *httpError
	switch {
	case errors.As(err, &he):
		http.Error(w, he.msg, he.status)
		return
	case errors.Is(err, pgx.ErrNoRows):
		http.Error(w, "no such order", http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(answer)
}

// nextEvent returns the time and id of o's next event: times of one order
// strictly increase, so the projection's "latest event" is the last written.
func (s *Service) nextEvent(last int64) (int64, string) {
	return max(s.now().UnixMilli(), last+1), outbox.NewID()
}

func writeOrderEvent(ctx context.Context, tx pgx.Tx, e orders.Event) error {
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode %s: %w", e.Type, err)
	}
	_, err = outbox.Write(ctx, tx, outbox.Event{ID: e.Metadata.EventID, AggregateType: AggregateOrder,
		AggregateID: e.OrderID(), EventType: string(e.Type), Payload: payload,
		Headers: map[string]string{"traceId": e.Metadata.TraceID}})
	return err
}

func (s *Service) create(w http.ResponseWriter, r *http.Request) {
	var req struct{ OrderID, CustomerID string }
	s.serve(w, r, &req, func(ctx context.Context, tx pgx.Tx) (int, any, error) {
		if req.OrderID == "" || req.CustomerID == "" {
			return 0, nil, &httpError{http.StatusBadRequest, "orderId and customerId are required"}
		}
		if o, err := ReadOrder(ctx, tx, req.OrderID, false); err == nil {
			return http.StatusOK, o, nil // a retried request
		}
		at, id := s.nextEvent(0)
		tag, err := tx.Exec(ctx, `INSERT INTO orders (id, customer_id, status, created_at, version, last_event_id, last_event_at)
VALUES ($1, $2, $3, $4, 1, $5, $4) ON CONFLICT (id) DO NOTHING`, req.OrderID, req.CustomerID, orders.StatusCreated, at, id)
		if err != nil {
			return 0, nil, err
		}
		if tag.RowsAffected() == 0 {
			return 0, nil, &httpError{http.StatusConflict, "order created concurrently; retry"}
		}
		e := orders.Event{Metadata: orders.Metadata{EventID: id, TraceID: "t-" + id, Timestamp: at}, Type: orders.TypeOrderCreated,
			Created: &orders.OrderCreated{OrderID: req.OrderID, CustomerID: req.CustomerID, CreatedAt: at}}
		if err := writeOrderEvent(ctx, tx, e); err != nil {
			return 0, nil, err
		}
		o, err := ReadOrder(ctx, tx, req.OrderID, false)
		return http.StatusCreated, o, err
	})
}

func (s *Service) updateItems(w http.ResponseWriter, r *http.Request) {
	var req struct{ Items []orders.LineItem }
	s.serve(w, r, &req, func(ctx context.Context, tx pgx.Tx) (int, any, error) {
		o, err := ReadOrder(ctx, tx, r.PathValue("id"), true)
		if err != nil {
			return 0, nil, err
		}
		if o.Status == orders.StatusShipped {
			return 0, nil, &httpError{http.StatusConflict, "order already shipped"}
		}
		if req.Items == nil {
			req.Items = []orders.LineItem{}
		}
		var amount int64
		for _, it := range req.Items {
			amount += it.Quantity * it.PriceCents
		}
		items, _ := json.Marshal(req.Items)
		at, id := s.nextEvent(o.lastEventAt)
		if _, err := tx.Exec(ctx, `UPDATE orders SET status = $2, items = $3, amount_cents = $4, updated_at = $5,
version = version + 1, last_event_id = $6, last_event_at = $5 WHERE id = $1`, o.ID, orders.StatusUpdated, string(items), amount, at, id); err != nil {
			return 0, nil, err
		}
		e := orders.Event{Metadata: orders.Metadata{EventID: id, TraceID: "t-" + id, Timestamp: at}, Type: orders.TypeOrderUpdated,
			Updated: &orders.OrderUpdated{OrderID: o.ID, Items: req.Items, UpdatedAt: at}}
		if err := writeOrderEvent(ctx, tx, e); err != nil {
			return 0, nil, err
		}
		o, err = ReadOrder(ctx, tx, o.ID, false)
		return http.StatusOK, o, err
	})
}

// PaymentRequest is the value of a payment.events record.
type PaymentRequest struct {
	EventID     string `json:"eventId"`
	OrderID     string `json:"orderId"`
	AmountCents int64  `json:"amountCents"`
	Currency    string `json:"currency"`
}

func (s *Service) ship(w http.ResponseWriter, r *http.Request) {
	var req struct{ TrackingNumber string }
	s.serve(w, r, &req, func(ctx context.Context, tx pgx.Tx) (int, any, error) {
		o, err := ReadOrder(ctx, tx, r.PathValue("id"), true)
		if err != nil {
			return 0, nil, err
		}
		if o.Status == orders.StatusShipped {
			return http.StatusOK, o, nil // a retried request
		}
		if req.TrackingNumber == "" {
			return 0, nil, &httpError{http.StatusBadRequest, "trackingNumber is required"}
		}
		at, id := s.nextEvent(o.lastEventAt)
		if _, err := tx.Exec(ctx, `UPDATE orders SET status = $2, tracking_number = $3, shipped_at = $4,
version = version + 1, last_event_id = $5, last_event_at = $4 WHERE id = $1`, o.ID, orders.StatusShipped, req.TrackingNumber, at, id); err != nil {
			return 0, nil, err
		}
		e := orders.Event{Metadata: orders.Metadata{EventID: id, TraceID: "t-" + id, Timestamp: at}, Type: orders.TypeOrderShipped,
			Shipped: &orders.OrderShipped{OrderID: o.ID, TrackingNumber: req.TrackingNumber, ShippedAt: at}}
		if err := writeOrderEvent(ctx, tx, e); err != nil {
			return 0, nil, err
		}
		payment := PaymentRequest{EventID: outbox.NewID(), OrderID: o.ID, AmountCents: o.AmountCents, Currency: "EUR"}
		value, _ := json.Marshal(payment)
		if _, err := outbox.Write(ctx, tx, outbox.Event{ID: payment.EventID, AggregateType: AggregatePayment,
			AggregateID: o.ID, EventType: "PaymentRequested", Payload: value}); err != nil {
			return 0, nil, err
		}
		o, err = ReadOrder(ctx, tx, o.ID, false)
		return http.StatusOK, o, err
	})
}

func (s *Service) get(w http.ResponseWriter, r *http.Request) {
	s.serve(w, r, nil, func(ctx context.Context, tx pgx.Tx) (int, any, error) {
		o, err := ReadOrder(ctx, tx, r.PathValue("id"), false)
		return http.StatusOK, o, err
	})
}

// ChargePayment is the payments consumer's effect: one row in payments,
// in the inbox transaction, so each payment event charges once.
func ChargePayment(ctx context.Context, tx pgx.Tx, value []byte) ([]byte, error) {
	var p PaymentRequest
	if err := json.Unmarshal(value, &p); err != nil {
		return nil, fmt.Errorf("payment request: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO payments (order_id, amount_cents, currency, event_id) VALUES ($1, $2, $3, $4)`,
		p.OrderID, p.AmountCents, p.Currency, p.EventID); err != nil {
		return nil, fmt.Errorf("charge order %s: %w", p.OrderID, err)
	}
	return []byte(`{"charged":true}`), nil
}
