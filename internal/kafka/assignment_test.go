package kafka

import "testing"

// TestPartitionsReadInLogs: the rebalance log lines name partitions as
// topic[p p …], topics and partitions sorted, and "none" for none.
func TestPartitionsReadInLogs(t *testing.T) {
	for _, tc := range []struct {
		in   map[string][]int32
		want string
	}{
		{nil, "none"},
		{map[string][]int32{"a": {}}, "none"},
		{map[string][]int32{"order-events": {3, 2}}, "order-events[2 3]"},
		{map[string][]int32{"b": {1, 0}, "a": {2}}, "a[2] b[0 1]"},
	} {
		if got := partitions(tc.in).String(); got != tc.want {
			t.Errorf("partitions(%v) = %q; want %q", tc.in, got, tc.want)
		}
	}
}
