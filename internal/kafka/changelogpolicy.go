package kafka

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
)

// checkChangelogPolicies checks that every changelog topic is compacted.
// A changelog the brokers delete by retention loses the keys not written
// lately, and a store restored from it misses them without a word: Run
// refuses to start on one (a *ConfigError naming each topic), or warns
// with AllowUncompactedChangelogs. A policy of compact,delete is allowed
// with a warning, as its retention may still delete keys.
func (r *Runner) checkChangelogPolicies(ctx context.Context, adm *kadm.Client, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	described, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return fmt.Errorf("describe the changelog topics' configs: %w", err)
	}
	var uncompacted []string
	for _, rc := range described {
		if rc.Err != nil {
			return fmt.Errorf("describe the config of changelog %s: %w", rc.Name, rc.Err)
		}
		for _, c := range rc.Configs {
			if c.Key != "cleanup.policy" || c.Value == nil {
				continue
			}
			policies := strings.Split(strings.ReplaceAll(*c.Value, " ", ""), ",")
			switch {
			case !slices.Contains(policies, "compact"):
				uncompacted = append(uncompacted, fmt.Sprintf("%s (cleanup.policy=%s)", rc.Name, *c.Value))
			case slices.Contains(policies, "delete"):
				r.cfg.Logger.Warn("changelog topic is compacted and deleted by retention: keys not written within its retention.ms are lost to restores",
					"topic", rc.Name, "cleanup.policy", *c.Value)
			}
		}
	}
	if len(uncompacted) == 0 {
		return nil
	}
	slices.Sort(uncompacted)
	const fix = "set cleanup.policy=compact on them (kafka-configs --alter --entity-type topics --entity-name <topic> --add-config cleanup.policy=compact), or delete them to have them recreated and restored from scratch"
	if r.cfg.AllowUncompactedChangelogs {
		r.cfg.Logger.Warn("changelog topics are not compacted: restores will miss keys the brokers deleted; "+fix, "topics", uncompacted)
		return nil
	}
	return &ConfigError{fmt.Errorf("changelog topics are not compacted, so restores would miss keys the brokers deleted by retention: %s: %s; or set AllowUncompactedChangelogs to run anyway",
		strings.Join(uncompacted, ", "), fix)}
}
