// Package crashpoint lets a test kill a process of the runtime at a named
// point of its protocol, the way SIGKILL would: os.Exit at once, without
// deferred calls, flushes or a goodbye to the broker.
//
// A crash point is armed by two environment variables, and only in a test
// binary (testing.Testing reports true): EXACTLY_CRASH_POINT names the
// point and EXACTLY_CRASH_AFTER (default 1) says at which hit of it the
// process dies. A production binary never reads them, so no environment can
// make it crash, while the test binary that CI runs is the very binary that
// is killed (a build tag would need a second build of everything and leave
// the crash points untested by the ordinary test run).
package crashpoint

import (
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
)

// The named points.
const (
	// AfterProcess: records processed and their store writes buffered,
	// nothing produced.
	AfterProcess = "after-process"
	// AfterProduce: outputs and changelog records acknowledged inside the
	// open transaction, input offsets not yet added to it.
	AfterProduce = "after-produce"
	// AfterAddOffsets: the transaction's offset commit answered, EndTxn not
	// sent.
	AfterAddOffsets = "after-add-offsets"
	// DuringEndTxn: EndTxn written to the broker, its answer not read.
	DuringEndTxn = "during-end-txn"
	// AfterEndTxn: the transaction committed, the local stores not yet
	// given the commit's writes and checkpoints.
	AfterEndTxn = "after-end-txn"
	// MidRestore: a restore has applied a batch of changelog records, made
	// it durable, and more are left. While it is armed, restores apply batches of
	// RestoreBatch(…) records, so that a small changelog spans several.
	MidRestore = "mid-restore"
	// InRebalance: inside a partitions-assigned or -revoked callback.
	InRebalance = "in-rebalance"
	// AfterStandbyRead: a standby has read a batch of changelog records
	// and not yet applied it with its checkpoint (its earlier batches are
	// on disk).
	AfterStandbyRead = "after-standby-read"
)

// ExitCode is the status a process killed at a crash point exits with.
const ExitCode = 86

var (
	armed = func() string {
		if !testing.Testing() {
			return ""
		}
		return os.Getenv("EXACTLY_CRASH_POINT")
	}()
	after = func() int64 {
		n, err := strconv.ParseInt(os.Getenv("EXACTLY_CRASH_AFTER"), 10, 64)
		if err != nil || n < 1 {
			return 1
		}
		return n
	}()
	hits atomic.Int64
)

// Reach kills the process if name is the armed point and this is the hit it
// is armed for.
func Reach(name string) {
	if armed == "" || name != armed {
		return
	}
	if hits.Add(1) == after {
		fmt.Fprintf(os.Stderr, "crashpoint: dying at %s (hit %d)\n", name, after)
		os.Exit(ExitCode)
	}
}

// RestoreBatch is the number of changelog records a restore applies per
// batch: def, or a small number while MidRestore is armed.
func RestoreBatch(def int) int {
	if armed == MidRestore {
		return 64
	}
	return def
}

// Armed reports whether any crash point is armed in this process.
func Armed() bool { return armed != "" }
