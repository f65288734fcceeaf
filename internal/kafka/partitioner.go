package kafka

import "github.com/twmb/franz-go/pkg/kgo"

// explicitOrKeyPartitioner keeps a partition the task chose (changelogs,
// custom partitioners) and otherwise hashes the key as Kafka does.
type explicitOrKeyPartitioner struct{}

func (explicitOrKeyPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	return &explicitTopicPartitioner{hash: kgo.StickyKeyPartitioner(nil).ForTopic(topic)}
}

type explicitTopicPartitioner struct {
	hash kgo.TopicPartitioner
}

func (p *explicitTopicPartitioner) RequiresConsistency(*kgo.Record) bool { return true }

func (p *explicitTopicPartitioner) Partition(r *kgo.Record, n int) int {
	if r.Partition >= 0 && int(r.Partition) < n {
		return int(r.Partition)
	}
	return p.hash.Partition(r, n)
}
