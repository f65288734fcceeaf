package kafka

import (
	"time"

	"github.com/exactly-go/exactly/internal/crashpoint"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// protocolCrashHooks reach the crash points that lie inside franz-go's
// transaction protocol (tests only; see package crashpoint).
type protocolCrashHooks struct{}

func (protocolCrashHooks) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key == int16(kmsg.TxnOffsetCommit) && err == nil {
		crashpoint.Reach(crashpoint.AfterAddOffsets)
	}
}

func (protocolCrashHooks) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key == int16(kmsg.EndTxn) && err == nil {
		crashpoint.Reach(crashpoint.DuringEndTxn)
	}
}
