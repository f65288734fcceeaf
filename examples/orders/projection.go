package orders

import (
	"cmp"
	"slices"
)

// Status is the furthest stage an order has reached.
type Status string

// The order stages, in order.
const (
	StatusCreated Status = "CREATED"
	StatusUpdated Status = "UPDATED"
	StatusShipped Status = "SHIPPED"
)

func (s Status) rank() int {
	switch s {
	case StatusCreated:
		return 1
	case StatusUpdated:
		return 2
	case StatusShipped:
		return 3
	}
	return 0
}

func stageOf(t EventType) Status {
	switch t {
	case TypeOrderCreated:
		return StatusCreated
	case TypeOrderUpdated:
		return StatusUpdated
	}
	return StatusShipped
}

// Projection is the read model of one order, the value of the
// order-projections topic. It is a pure function of the set of distinct
// events (by eventId) applied for the order, whatever their arrival order:
//
//   - CustomerID and CreatedAt come from the OrderCreated with the least
//     (timestamp, eventId): an order is created once, by its first event;
//   - Status is the furthest stage reached: CREATED < UPDATED < SHIPPED;
//   - Items and UpdatedAt come from the OrderUpdated with the greatest
//     (timestamp, eventId); TrackingNumber and ShippedAt from the
//     OrderShipped with the greatest (timestamp, eventId);
//   - Version is the number of distinct events applied;
//   - LastEventID is the eventId of the applied event with the greatest
//     (timestamp, eventId), so it too depends on the set alone.
//
// Timestamps are epoch milliseconds, 0 while no event has set them; Items
// is empty, never null.
type Projection struct {
	OrderID        string     `json:"orderId"`
	CustomerID     string     `json:"customerId"`
	Status         Status     `json:"status"`
	Items          []LineItem `json:"items"`
	TrackingNumber string     `json:"trackingNumber"`
	CreatedAt      int64      `json:"createdAt"`
	UpdatedAt      int64      `json:"updatedAt"`
	ShippedAt      int64      `json:"shippedAt"`
	Version        int64      `json:"version"`
	LastEventID    string     `json:"lastEventId"`
}

// EventRef places an event in the (timestamp, eventId) order that decides
// between events of one order. The zero EventRef stands for no event.
type EventRef struct {
	Timestamp int64  `json:"timestamp"`
	EventID   string `json:"eventId"`
}

func refOf(e Event) EventRef {
	return EventRef{Timestamp: e.Metadata.Timestamp, EventID: e.Metadata.EventID}
}

// IsZero reports whether r stands for no event.
func (r EventRef) IsZero() bool { return r.EventID == "" }

// Compare orders refs by timestamp, then event id.
func (r EventRef) Compare(o EventRef) int {
	if c := cmp.Compare(r.Timestamp, o.Timestamp); c != 0 {
		return c
	}
	return cmp.Compare(r.EventID, o.EventID)
}

// Aggregate is what the projection store holds per order: the projection
// and the events each of its parts was taken from, which is all that
// applying one more event needs, and the highest sequence number applied,
// which is what the reorder buffer needs once it has forgotten the order.
type Aggregate struct {
	Projection Projection `json:"projection"`
	Created    EventRef   `json:"created"`
	Updated    EventRef   `json:"updated"`
	Shipped    EventRef   `json:"shipped"`
	Last       EventRef   `json:"last"`
	// Sequence is the highest metadata.sequence applied, 0 if none. It is
	// kept apart from Projection.Version, which counts the events without
	// a sequence number too, and an event that reuses a number already
	// applied: Version is not the last sequence number.
	Sequence uint64 `json:"sequence,omitempty"`
}

// Clone returns a deep copy of a: the projection store keeps decoded
// aggregates and hands out copies made with it, so that a processor
// changing the aggregate it read changes nothing in the store.
func (a Aggregate) Clone() Aggregate {
	a.Projection.Items = slices.Clone(a.Projection.Items)
	return a
}

// Apply applies one event not applied before, in O(1).
func (a *Aggregate) Apply(e Event) {
	ref := refOf(e)
	p := &a.Projection
	p.OrderID = e.OrderID()
	p.Version++
	if p.Items == nil {
		p.Items = []LineItem{}
	}
	if a.Last.IsZero() || ref.Compare(a.Last) > 0 {
		a.Last, p.LastEventID = ref, ref.EventID
	}
	a.Sequence = max(a.Sequence, e.Metadata.Sequence)
	if s := stageOf(e.Type); s.rank() > p.Status.rank() {
		p.Status = s
	}
	switch e.Type {
	case TypeOrderCreated:
		if a.Created.IsZero() || ref.Compare(a.Created) < 0 {
			a.Created, p.CustomerID, p.CreatedAt = ref, e.Created.CustomerID, e.Created.CreatedAt
		}
	case TypeOrderUpdated:
		if a.Updated.IsZero() || ref.Compare(a.Updated) > 0 {
			a.Updated, p.Items, p.UpdatedAt = ref, slices.Clone(e.Updated.Items), e.Updated.UpdatedAt
			if p.Items == nil {
				p.Items = []LineItem{}
			}
		}
	case TypeOrderShipped:
		if a.Shipped.IsZero() || ref.Compare(a.Shipped) > 0 {
			a.Shipped, p.TrackingNumber, p.ShippedAt = ref, e.Shipped.TrackingNumber, e.Shipped.ShippedAt
		}
	}
}

// Project computes an order's projection from its events, all at once: the
// definition Aggregate.Apply must agree with. Copies sharing an eventId
// count once (the first in events wins).
func Project(events []Event) Projection {
	seen := map[string]bool{}
	var distinct []Event
	for _, e := range events {
		if !seen[e.Metadata.EventID] {
			seen[e.Metadata.EventID] = true
			distinct = append(distinct, e)
		}
	}
	slices.SortFunc(distinct, func(a, b Event) int { return refOf(a).Compare(refOf(b)) })
	p := Projection{Items: []LineItem{}, Version: int64(len(distinct))}
	createdSeen := false
	for _, e := range distinct {
		p.OrderID = e.OrderID()
		p.LastEventID = e.Metadata.EventID
		if s := stageOf(e.Type); s.rank() > p.Status.rank() {
			p.Status = s
		}
		switch e.Type {
		case TypeOrderCreated:
			if !createdSeen {
				createdSeen = true
				p.CustomerID, p.CreatedAt = e.Created.CustomerID, e.Created.CreatedAt
			}
		case TypeOrderUpdated:
			p.Items, p.UpdatedAt = append([]LineItem{}, e.Updated.Items...), e.Updated.UpdatedAt
		case TypeOrderShipped:
			p.TrackingNumber, p.ShippedAt = e.Shipped.TrackingNumber, e.Shipped.ShippedAt
		}
	}
	return p
}
