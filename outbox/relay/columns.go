package relay

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// ErrTableColumns is the error, wrapped, with which Run stops when the
// outbox table lacks a column the configuration names, or has one of a
// type the router cannot use. The message names the column and the
// option. Run does not retry it: the configuration or the table must
// change.
var ErrTableColumns = errors.New("the outbox table does not fit the relay's configuration")

// sessionParams are the settings of the relay's database sessions that
// fix the text form of the values it decodes, whatever the server's or
// the DSN's defaults: ISO dates in UTC, bytea in hex.
var sessionParams = map[string]string{"DateStyle": "ISO, MDY", "TimeZone": "UTC", "bytea_output": "hex"}

// connect opens a regular connection with sessionParams.
func (r *Relay) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(r.cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("relay: DSN: %w", err)
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("relay: connect: %w", err)
	}
	return conn, nil
}

// columnType is a column's type as the catalog has it.
type columnType struct {
	base uint32 // the type's OID, through a domain to its base type
	name string // the type's name, for casts
}

// table is what the relay learned of the outbox table at a session's
// start, and the statements that follow from it.
type table struct {
	columns map[string]columnType
	// deleteKey is the column a CDC relay deletes relayed rows by: the
	// table's primary key when it is one column, else the event id.
	deleteKey string
	createdAt bool     // the table has created_at, the order of polling
	types     []uint32 // per router column, its base type (0 when absent)

	selectRows, selectBackfill, deleteByCtid, deleteByKey string
}

// Type OIDs the relay decodes specially.
const (
	oidBytea       = pgtype.ByteaOID
	oidTimestamp   = pgtype.TimestampOID
	oidTimestamptz = pgtype.TimestamptzOID
)

// inspectTable reads the outbox table's columns from the catalog, checks
// that every column the router needs is there and usable, and prepares
// the statements. A missing table is an ordinary error (it may be created
// yet); a missing column is ErrTableColumns.
func (r *Relay) inspectTable(ctx context.Context, conn *pgx.Conn) (*table, error) {
	name := quoteTable(r.cfg.Table)
	rows, err := conn.Query(ctx, `SELECT a.attname,
    CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END,
    format_type(a.atttypid, NULL),
    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`, name)
	if err != nil {
		return nil, fmt.Errorf("relay: read the columns of %s: %w", name, err)
	}
	t := &table{columns: map[string]columnType{}}
	var primaryKey string
	var column string
	var ct columnType
	var isKey bool
	if _, err := pgx.ForEachRow(rows, []any{&column, &ct.base, &ct.name, &isKey}, func() error {
		t.columns[column] = ct
		if isKey {
			primaryKey = column
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("relay: read the columns of %s: %w", name, err)
	}
	if len(t.columns) == 0 {
		return nil, fmt.Errorf("relay: table %s does not exist (or has no columns); create it with outbox.Migrate", name)
	}
	rt := r.router
	var problems []string
	for i, c := range rt.columns {
		if _, ok := t.columns[c]; !ok && rt.required[i] != "" {
			problems = append(problems, fmt.Sprintf("it has no column %q (%s)", c, rt.required[i]))
		}
	}
	if rt.timestamp >= 0 {
		if ct, ok := t.columns[rt.columns[rt.timestamp]]; ok && !timestampType(ct.base) {
			problems = append(problems, fmt.Sprintf("column %q is of type %s, which is no time (Router.FieldEventTimestamp wants timestamptz, timestamp or an integer of milliseconds)", rt.columns[rt.timestamp], ct.name))
		}
	}
	_, t.createdAt = t.columns["created_at"]
	if r.cfg.Mode == ModePoll && !t.createdAt {
		problems = append(problems, `it has no column "created_at", by which ModePoll reads the oldest rows first`)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("relay: %w: table %s: %s", ErrTableColumns, name, strings.Join(problems, "; "))
	}
	t.deleteKey = primaryKey
	if t.deleteKey == "" {
		t.deleteKey = rt.cfg.FieldEventID
	}
	t.prepare(rt, name)
	return t, nil
}

func timestampType(oid uint32) bool {
	switch oid {
	case oidTimestamptz, oidTimestamp, pgtype.Int8OID, pgtype.Int4OID, pgtype.Int2OID:
		return true
	}
	return false
}

// prepare builds the statements. Rows are selected with their ctid and
// created_at first, then the router's columns as text in the router's
// order (NULL for an optional column the table lacks).
func (t *table) prepare(rt *router, name string) {
	list := make([]string, len(rt.columns))
	t.types = make([]uint32, len(rt.columns))
	for i, c := range rt.columns {
		if ct, ok := t.columns[c]; ok {
			t.types[i] = ct.base
			list[i] = pgx.Identifier{c}.Sanitize() + "::text"
		} else {
			list[i] = "NULL::text"
		}
	}
	key := pgx.Identifier{t.deleteKey}.Sanitize()
	createdAt, order := "NULL::timestamptz", key
	if t.createdAt {
		createdAt, order = "created_at", "created_at, "+key
	}
	selectRows := fmt.Sprintf(`SELECT ctid::text, %s, %s FROM %s ORDER BY %s LIMIT $1`, createdAt, strings.Join(list, ", "), name, order)
	t.selectRows = selectRows + " FOR UPDATE SKIP LOCKED"
	t.selectBackfill = selectRows
	t.deleteByCtid = fmt.Sprintf(`DELETE FROM %s WHERE ctid = ANY($1::text[]::tid[])`, name)
	t.deleteByKey = fmt.Sprintf(`DELETE FROM %s WHERE %s = ANY($1::text[]::%s[]) RETURNING %s::text`, name, key, t.columns[t.deleteKey].name, key)
}

// layout places the router's columns in the tuples of one relation of the
// replication stream.
type layout struct {
	pos       []int    // per router column, its index in a tuple; -1 when the relation lacks it
	types     []uint32 // per router column, its base type
	deletePos int      // the index of the table's delete key
	err       error    // the relation lacks a required column: its rows are unroutable
}

// layoutOf maps the columns of a relation message (the table as the
// transactions that follow wrote it) to the router's.
func (t *table) layoutOf(rt *router, m *pglogrepl.RelationMessage) *layout {
	l := &layout{pos: make([]int, len(rt.columns)), types: make([]uint32, len(rt.columns)), deletePos: -1}
	at := map[string]int{}
	for i, c := range m.Columns {
		at[c.Name] = i
	}
	for i, c := range rt.columns {
		j, ok := at[c]
		if !ok {
			l.pos[i] = -1
			if rt.required[i] != "" && l.err == nil {
				l.err = fmt.Errorf("table %s.%s has no column %q (%s)", m.Namespace, m.RelationName, c, rt.required[i])
			}
			continue
		}
		l.pos[i] = j
		l.types[i] = m.Columns[j].DataType
		if ct, ok := t.columns[c]; ok {
			l.types[i] = ct.base // the relation names a domain's own type
		}
	}
	if j, ok := at[t.deleteKey]; ok {
		l.deletePos = j
	} else if l.err == nil {
		l.err = fmt.Errorf("table %s.%s has no column %q to delete relayed rows by", m.Namespace, m.RelationName, t.deleteKey)
	}
	return l
}

// tupleRow decodes an insert's tuple.
func (rt *router) tupleRow(l *layout, tuple *pglogrepl.TupleData) row {
	text := func(i int) ([]byte, error) {
		if i < 0 {
			return nil, nil
		}
		if i >= len(tuple.Columns) {
			return nil, fmt.Errorf("tuple has %d columns, want %d at least", len(tuple.Columns), i+1)
		}
		switch c := tuple.Columns[i]; c.DataType {
		case pglogrepl.TupleDataTypeNull:
			return nil, nil
		case pglogrepl.TupleDataTypeText:
			return c.Data, nil
		default:
			return nil, fmt.Errorf("column %d came in format %q, not text", i, c.DataType)
		}
	}
	x := rt.decode(l.types, func(i int) ([]byte, error) { return text(l.pos[i]) })
	if x.err == nil {
		x.err = l.err
	}
	if key, err := text(l.deletePos); err == nil && key != nil {
		x.deleteKey = string(key)
	}
	return x
}

// decode builds the row from the text of each router column (nil for
// NULL), which cell returns. Text that aliases a buffer is copied.
func (rt *router) decode(types []uint32, cell func(i int) ([]byte, error)) row {
	x := row{values: make([][]byte, len(rt.columns))}
	for i, c := range rt.columns {
		text, err := cell(i)
		if err == nil && text != nil {
			x.values[i], err = decodeValue(text, types[i])
		}
		if err == nil && i == rt.timestamp && text != nil {
			x.timestamp, err = parseTime(string(text), types[i])
		}
		if err != nil && x.err == nil {
			x.err = fmt.Errorf("column %s: %w", c, err)
		}
	}
	return x
}

// decodeValue returns the bytes a column's text stands for: the bytes of a
// bytea, else a copy of the text.
func decodeValue(text []byte, oid uint32) ([]byte, error) {
	if oid == oidBytea {
		s, ok := strings.CutPrefix(string(text), `\x`)
		if !ok {
			return nil, errors.New("bytea not in hex form")
		}
		return hex.DecodeString(s)
	}
	return append(make([]byte, 0, len(text)), text...), nil
}

// parseTime reads a timestamp column's text: ISO timestamps (the session
// runs in UTC, and a timestamp without zone is taken as UTC) or an integer
// of milliseconds since the epoch.
func parseTime(text string, oid uint32) (time.Time, error) {
	t, err := parseTimeText(text, oid)
	switch {
	case err != nil:
		return time.Time{}, err
	case t.UnixMilli() < 0:
		return time.Time{}, fmt.Errorf("%q is before 1970, which a Kafka record cannot carry", text)
	case t.After(lastProducibleTime):
		return time.Time{}, fmt.Errorf("%q is after %s, which the producer cannot encode", text, lastProducibleTime.Format(time.RFC3339))
	}
	return t, nil
}

// lastProducibleTime is the last timestamp franz-go encodes correctly: it
// counts a record's time in nanoseconds, and a later one overflows into a
// wrong timestamp instead of an error.
var lastProducibleTime = time.Unix(0, math.MaxInt64).UTC()

func parseTimeText(text string, oid uint32) (time.Time, error) {
	switch oid {
	case oidTimestamptz, oidTimestamp:
		for _, layout := range []string{"2006-01-02 15:04:05.999999999Z07", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07:00:00", "2006-01-02 15:04:05.999999999"} {
			if t, err := time.Parse(layout, text); err == nil {
				return t, nil
			}
		}
		return time.Time{}, fmt.Errorf("%q is not a time the record can carry", text)
	default:
		ms, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q is not milliseconds since the epoch", text)
		}
		return time.UnixMilli(ms), nil
	}
}
