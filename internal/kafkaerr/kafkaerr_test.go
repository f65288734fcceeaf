package kafkaerr

import (
	"context"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

func TestRefusedForGoodIsTheRecordsFaultNotTheConfigurations(t *testing.T) {
	for err, want := range map[error]bool{
		kerr.MessageTooLarge: true,
		fmt.Errorf("%w (uncompressed_bytes=20000, compressed_bytes=20100)", kerr.MessageTooLarge): true,
		kerr.RecordListTooLarge: true,
		kerr.InvalidTimestamp:   true,
		kerr.InvalidRecord:      true,
		kerr.CorruptMessage:     true,

		kerr.TopicAuthorizationFailed: false,
		kerr.UnknownTopicOrPartition:  false,
		kerr.NotLeaderForPartition:    false,
		kerr.RequestTimedOut:          false,
		context.Canceled:              false,
	} {
		if got := RefusedForGood(err); got != want {
			t.Errorf("RefusedForGood(%v) = %v, want %v", err, got, want)
		}
	}
}
