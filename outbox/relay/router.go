package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/wire"
)

// DefaultTopicReplacement routes aggregate type "order" to topic
// "order.events".
const DefaultTopicReplacement = "${aggregate_type}.events"

// DefaultRouteTopicRegex matches the whole routed-by value as the group
// routedByValue, Debezium's default.
const DefaultRouteTopicRegex = "(?<routedByValue>.*)"

// Router says how an outbox row becomes a Kafka record. Its options are
// those of Debezium's Outbox Event Router (each comment names the key), so
// a Debezium configuration carries over; the zero value routes as the
// relay always has: topic "<aggregate_type>.events", key aggregate_id,
// value payload, headers "id" and "eventType" followed by the row's own
// headers.
//
// Two columns keep their meaning whatever the options, when the table has
// them: event_type becomes the header "eventType" (unless NULL), and
// headers, a JSON object, adds one header per key (string values
// unquoted, others as JSON), in key order. Headers of AdditionalFields
// follow.
//
// A column an option names that the table lacks stops the relay at start
// with ErrTableColumns. A row the router cannot route (NULL in the
// route-by or event id column, a topic Kafka does not accept, a NULL
// payload without TombstoneOnEmptyPayload, a timestamp that is no time)
// goes to Config.DeadLetterTopic with its reason, or, without one, ends Run
// with ErrRowUnroutable.
type Router struct {
	// RouteByField (route.by.field) is the column whose value routes the
	// row through RouteTopicRegex and RouteTopicReplacement. Default
	// "aggregate_type" (Debezium's: "aggregatetype").
	RouteByField string
	// RouteTopicRegex (route.topic.regex) must match the whole routed-by
	// value for RouteTopicReplacement to apply; a value it does not match
	// is the topic itself, as in Debezium. Go's regexp syntax (RE2), where
	// a named group is written (?<name>…), as in Java, or (?P<name>…).
	// Default DefaultRouteTopicRegex.
	RouteTopicRegex string
	// RouteTopicReplacement (route.topic.replacement) is the topic of a
	// matched value: ${name} is the named group's text, ${1} the first
	// group's, ${0} the whole value and $$ a dollar sign (the syntax of
	// Go's regexp.Expand: prefer the braces, and write $$ where Java would
	// write \$). A group the regex does not have is a configuration error.
	// ${aggregate_type}, unless the regex has a group of that name, is the
	// whole routed-by value, and is accepted only while RouteByField is
	// aggregate_type: the relay's syntax from before the router existed.
	// Default DefaultTopicReplacement, "${aggregate_type}.events"
	// (Debezium's: "outbox.event.${routedByValue}").
	RouteTopicReplacement string
	// FieldEventID (table.field.event.id) is the column published in the
	// header "id", by which consumers deduplicate. Default "id".
	FieldEventID string
	// FieldEventKey (table.field.event.key) is the column whose value is
	// the record's key; NULL publishes the record without a key (Kafka
	// then spreads such records over partitions). Default "aggregate_id"
	// (Debezium's: "aggregateid").
	FieldEventKey string
	// FieldEventPayload (table.field.event.payload) is the column whose
	// value is the record's value, byte for byte (the text of a json or
	// text column; the bytes of a bytea one). Default "payload".
	FieldEventPayload string
	// FieldEventTimestamp (table.field.event.timestamp), if set, is the
	// column whose time becomes the record's timestamp: timestamptz,
	// timestamp (read as UTC) or an integer of milliseconds since the Unix
	// epoch; Kafka keeps milliseconds. When unset, or NULL in a row, the
	// timestamp is the time the relay hands the record to the producer
	// (Debezium's: the time it processed the change). A time before 1970,
	// or after 2262-04-11 (franz-go counts nanoseconds), makes the row
	// unroutable. Kafka's time-based retention counts from this
	// timestamp, and a broker refuses one further in the future than its
	// log.message.timestamp.after.max.ms (or further in the past than
	// log.message.timestamp.before.max.ms) with INVALID_TIMESTAMP: such a
	// row goes to Config.DeadLetterTopic with the reason production-error.
	FieldEventTimestamp string
	// AdditionalFields (table.fields.additional.placement) are further
	// columns published with the record. Only PlacementHeader is
	// supported: the value is the payload unchanged, with no envelope
	// to put a field in. ParseAdditionalFields reads Debezium's syntax.
	AdditionalFields []AdditionalField
	// TombstoneOnEmptyPayload (route.tombstone.on.empty.payload) publishes
	// a row whose payload is NULL, empty or only white space as a
	// tombstone: a record with a nil value, which deletes its key from a
	// compacted topic. Without it a NULL payload makes the row unroutable,
	// and an empty one is published as an empty value.
	TombstoneOnEmptyPayload bool
}

// Placement says where an additional field goes in the record.
type Placement string

// PlacementHeader publishes the column's value as a header.
const PlacementHeader Placement = "header"

// AdditionalField is one column published beside the payload.
type AdditionalField struct {
	// Column is the column to publish. Required.
	Column string
	// Placement is where it goes; only PlacementHeader is supported.
	Placement Placement
	// Alias is the header's name; default Column.
	Alias string
}

// ParseAdditionalFields reads Debezium's table.fields.additional.placement
// syntax: a comma-separated list of column:placement or
// column:placement:alias, e.g. "type:header:eventType,tenant:header". An
// empty spec is no fields.
func ParseAdditionalFields(spec string) ([]AdditionalField, error) {
	var fields []AdditionalField
	for entry := range strings.SplitSeq(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		parts := strings.Split(entry, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, fmt.Errorf("relay: additional field %q: want column:placement or column:placement:alias", entry)
		}
		f := AdditionalField{Column: strings.TrimSpace(parts[0]), Placement: Placement(strings.TrimSpace(parts[1]))}
		if len(parts) == 3 {
			f.Alias = strings.TrimSpace(parts[2])
		}
		fields = append(fields, f)
	}
	return fields, nil
}

// aggregateTypeRef is the replacement variable of the relay's first syntax.
const aggregateTypeRef = "${aggregate_type}"

// router is a validated Router: it knows the columns it reads and builds
// the record of a decoded row.
type router struct {
	cfg   Router
	match *regexp.Regexp // RouteTopicRegex, anchored at both ends
	topic []templatePart // RouteTopicReplacement, parsed

	// columns are the distinct columns the router reads; each role below is
	// an index into them (-1: none). Roles share a column when they name
	// the same one.
	columns                                                  []string
	required                                                 []string // per column: the option that requires it, "" when optional
	id, routeBy, key, payload, timestamp, eventType, headers int
	extra                                                    []extraHeader
}

type extraHeader struct {
	column int
	name   string
}

// templatePart is a literal, or a group reference when group >= 0.
type templatePart struct {
	literal string
	group   int
}

// newRouter applies the defaults to cfg and checks it. replacement is
// Config.TopicReplacement, the older name of RouteTopicReplacement.
func newRouter(cfg Router, replacement string) (*router, error) {
	switch {
	case cfg.RouteTopicReplacement == "":
		cfg.RouteTopicReplacement = replacement
	case replacement != "" && replacement != cfg.RouteTopicReplacement:
		return nil, fmt.Errorf("relay: Config.TopicReplacement %q and Router.RouteTopicReplacement %q disagree: set only Router.RouteTopicReplacement", replacement, cfg.RouteTopicReplacement)
	}
	defaults := []struct {
		field *string
		value string
	}{
		{&cfg.RouteByField, "aggregate_type"},
		{&cfg.RouteTopicRegex, DefaultRouteTopicRegex},
		{&cfg.RouteTopicReplacement, DefaultTopicReplacement},
		{&cfg.FieldEventID, "id"},
		{&cfg.FieldEventKey, "aggregate_id"},
		{&cfg.FieldEventPayload, "payload"},
	}
	for _, d := range defaults {
		if *d.field == "" {
			*d.field = d.value
		}
	}
	match, err := regexp.Compile(`^(?:` + cfg.RouteTopicRegex + `)$`)
	if err != nil {
		return nil, fmt.Errorf("relay: Router.RouteTopicRegex (route.topic.regex) %q: %w", cfg.RouteTopicRegex, err)
	}
	rt := &router{cfg: cfg, match: match, timestamp: -1}
	if rt.topic, err = parseTemplate(cfg.RouteTopicReplacement, match, cfg.RouteByField); err != nil {
		return nil, err
	}
	rt.routeBy = rt.column(cfg.RouteByField, "Router.RouteByField (route.by.field)")
	rt.id = rt.column(cfg.FieldEventID, "Router.FieldEventID (table.field.event.id)")
	rt.key = rt.column(cfg.FieldEventKey, "Router.FieldEventKey (table.field.event.key)")
	rt.payload = rt.column(cfg.FieldEventPayload, "Router.FieldEventPayload (table.field.event.payload)")
	if cfg.FieldEventTimestamp != "" {
		rt.timestamp = rt.column(cfg.FieldEventTimestamp, "Router.FieldEventTimestamp (table.field.event.timestamp)")
	}
	for _, f := range cfg.AdditionalFields {
		if f.Column == "" {
			return nil, errors.New("relay: Router.AdditionalFields (table.fields.additional.placement): an entry has no column")
		}
		if f.Placement != PlacementHeader {
			return nil, fmt.Errorf("relay: Router.AdditionalFields (table.fields.additional.placement): column %s: placement %q is not supported; use %q (the relay publishes the payload unchanged, with no envelope)", f.Column, f.Placement, PlacementHeader)
		}
		name := f.Alias
		if name == "" {
			name = f.Column
		}
		rt.extra = append(rt.extra, extraHeader{column: rt.column(f.Column, "Router.AdditionalFields (table.fields.additional.placement)"), name: name})
	}
	rt.eventType = rt.column("event_type", "")
	rt.headers = rt.column("headers", "")
	return rt, nil
}

// column returns the index of name among the router's columns, adding it
// if new; option, if set, makes the column required.
func (rt *router) column(name, option string) int {
	i := slices.Index(rt.columns, name)
	if i < 0 {
		rt.columns = append(rt.columns, name)
		rt.required = append(rt.required, "")
		i = len(rt.columns) - 1
	}
	if rt.required[i] == "" {
		rt.required[i] = option
	}
	return i
}

// parseTemplate parses a replacement in regexp.Expand's syntax, resolving
// every group reference against re now, so that a typo fails at start
// instead of routing to a truncated topic.
func parseTemplate(template string, re *regexp.Regexp, routeByField string) ([]templatePart, error) {
	var parts []templatePart
	literal := func(s string) {
		if n := len(parts); n > 0 && parts[n-1].group < 0 {
			parts[n-1].literal += s
			return
		}
		parts = append(parts, templatePart{literal: s, group: -1})
	}
	for rest := template; rest != ""; {
		i := strings.IndexByte(rest, '$')
		if i < 0 {
			literal(rest)
			break
		}
		literal(rest[:i])
		rest = rest[i:]
		if strings.HasPrefix(rest, "$$") {
			literal("$")
			rest = rest[2:]
			continue
		}
		name, n := templateName(rest)
		if n == 0 {
			literal("$") // as regexp.Expand: a $ not followed by a name is itself
			rest = rest[1:]
			continue
		}
		rest = rest[n:]
		group := -1
		if num, err := strconv.Atoi(name); err == nil {
			if num > re.NumSubexp() {
				return nil, fmt.Errorf("relay: Router.RouteTopicReplacement (route.topic.replacement) %q refers to group %d; the regex %q has %d", template, num, re.String(), re.NumSubexp())
			}
			group = num
		} else if group = re.SubexpIndex(name); group < 0 {
			if name != "aggregate_type" {
				return nil, fmt.Errorf("relay: Router.RouteTopicReplacement (route.topic.replacement) %q refers to group %q, which the regex has not", template, name)
			}
			if routeByField != "aggregate_type" {
				return nil, fmt.Errorf("relay: Router.RouteTopicReplacement (route.topic.replacement) %q uses %s while routing by %q: write ${routedByValue}", template, aggregateTypeRef, routeByField)
			}
			group = 0 // the whole value, which is the aggregate type
		}
		parts = append(parts, templatePart{group: group})
	}
	return parts, nil
}

// templateName reads the reference at the start of s ("$name" or
// "${name}"), as regexp.Expand does; n is 0 when there is none.
func templateName(s string) (name string, n int) {
	isNameByte := func(c byte) bool {
		return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	braced := len(s) > 1 && s[1] == '{'
	i := 1
	if braced {
		i = 2
	}
	start := i
	for i < len(s) && isNameByte(s[i]) {
		i++
	}
	if i == start {
		return "", 0
	}
	name = s[start:i]
	if braced {
		if i >= len(s) || s[i] != '}' {
			return "", 0
		}
		i++
	}
	return name, i
}

// topicFor routes a routed-by value: the replacement of its match, or the
// value itself when the regex does not match it.
func (rt *router) topicFor(value string) string {
	m := rt.match.FindStringSubmatchIndex(value)
	if m == nil {
		return value
	}
	var b strings.Builder
	for _, p := range rt.topic {
		if p.group < 0 {
			b.WriteString(p.literal)
		} else if start := m[2*p.group]; start >= 0 {
			b.WriteString(value[start:m[2*p.group+1]])
		}
	}
	return b.String()
}

// row is one outbox row on its way to Kafka: the router's columns in their
// order, nil where NULL or missing from the table. Text columns hold their
// text, bytea ones their bytes.
type row struct {
	values    [][]byte
	timestamp time.Time // the timestamp column's time; zero when none
	err       error     // the row could not be decoded: it is unroutable
	deleteKey string    // CDC: the value of the column the row is deleted by
	ctid      string    // poll: the row's physical position, to delete it by
}

// eventID names the row in messages.
func (rt *router) eventID(row row) string {
	if row.values[rt.id] == nil {
		return "(NULL id)"
	}
	return string(row.values[rt.id])
}

// record builds the Kafka record of row, or says why the row cannot be
// routed.
func (rt *router) record(row row) (*kgo.Record, error) {
	if row.err != nil {
		return nil, fmt.Errorf("relay: outbox row %s: %w", rt.eventID(row), row.err)
	}
	routedBy := row.values[rt.routeBy]
	if routedBy == nil {
		return nil, fmt.Errorf("relay: outbox row %s: route-by column %s is NULL", rt.eventID(row), rt.cfg.RouteByField)
	}
	topic := rt.topicFor(string(routedBy))
	if !validTopic(topic) {
		return nil, fmt.Errorf("relay: outbox row %s routes to %q, which is not a valid topic name", rt.eventID(row), topic)
	}
	if row.values[rt.id] == nil {
		return nil, fmt.Errorf("relay: outbox row with %s %q: event id column %s is NULL", rt.cfg.RouteByField, routedBy, rt.cfg.FieldEventID)
	}
	value := row.values[rt.payload]
	if rt.cfg.TombstoneOnEmptyPayload && len(bytes.TrimSpace(value)) == 0 {
		value = nil
	} else if value == nil {
		return nil, fmt.Errorf("relay: outbox row %s: payload column %s is NULL (Router.TombstoneOnEmptyPayload would publish a tombstone)", rt.eventID(row), rt.cfg.FieldEventPayload)
	}
	rec := &kgo.Record{
		Topic:     topic,
		Key:       row.values[rt.key],
		Value:     value,
		Timestamp: row.timestamp,
		Headers:   rt.baseHeaders(row),
	}
	if raw := row.values[rt.headers]; len(raw) > 0 && string(raw) != "null" {
		var extra map[string]json.RawMessage
		if err := json.Unmarshal(raw, &extra); err != nil {
			return nil, fmt.Errorf("relay: headers of outbox row %s: %w", rt.eventID(row), err)
		}
		keys := make([]string, 0, len(extra))
		for k := range extra {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			value := []byte(extra[k])
			var s string
			if json.Unmarshal(value, &s) == nil {
				value = []byte(s)
			}
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: value})
		}
	}
	for _, h := range rt.extra {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.name, Value: row.values[h.column]})
	}
	return rec, nil
}

// baseHeaders are the "id" and "eventType" headers of row, as far as it
// has them.
func (rt *router) baseHeaders(row row) []kgo.RecordHeader {
	headers := make([]kgo.RecordHeader, 0, 2+len(rt.extra))
	headers = append(headers, kgo.RecordHeader{Key: "id", Value: row.values[rt.id]})
	if row.values[rt.eventType] != nil {
		headers = append(headers, kgo.RecordHeader{Key: "eventType", Value: row.values[rt.eventType]})
	}
	return headers
}

// ReasonUnroutable is the exactly.error.reason of a row the relay could
// not route (see Config.DeadLetterTopic).
const ReasonUnroutable = "unroutable"

// deadLetter is the record that carries an unroutable row to topic: its
// key and payload as far as it has them, its "id" and "eventType"
// headers, and why it could not be routed.
func (rt *router) deadLetter(row row, topic string, cause error) *kgo.Record {
	rec := &kgo.Record{Topic: topic, Key: row.values[rt.key], Value: row.values[rt.payload], Headers: rt.baseHeaders(row)}
	rec.Headers = append(rec.Headers,
		kgo.RecordHeader{Key: wire.HeaderErrorReason, Value: []byte(ReasonUnroutable)},
		kgo.RecordHeader{Key: wire.HeaderErrorMessage, Value: []byte(cause.Error())})
	return rec
}

// validTopic reports whether Kafka accepts name as a topic name.
func validTopic(name string) bool {
	if name == "" || name == "." || name == ".." || len(name) > 249 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
