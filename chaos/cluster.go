package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/exactly-go/exactly/internal/fleet"
)

// openTransactions counts the partitions whose last stable offset is below
// their high watermark: a transaction has written there and not ended.
// It returns -1 when the cluster does not answer.
func (h *harness) openTransactions(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	topics, err := h.adm.ListTopics(ctx)
	if err != nil {
		return -1
	}
	high, err := h.adm.ListEndOffsets(ctx, topics.Names()...)
	if err != nil {
		return -1
	}
	stable, err := h.adm.ListCommittedOffsets(ctx, topics.Names()...)
	if err != nil {
		return -1
	}
	open := 0
	high.Each(func(o kadm.ListedOffset) {
		if s, ok := stable.Lookup(o.Topic, o.Partition); o.Err != nil || !ok || s.Err != nil || s.Offset < o.Offset {
			open++
		}
	})
	return open
}

// poll reads the group's committed offsets and the input's end offsets,
// and notes group rebalances. caughtUp says every input record is
// committed. While the cluster does not answer, it returns the last
// figures it read.
func (h *harness) poll(ctx context.Context) (committed, end int64, caughtUp bool) {
	committed, end, caughtUp, ok := h.read(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok {
		h.lastCommitted, h.lastEnd = committed, end
	}
	return h.lastCommitted, h.lastEnd, ok && caughtUp
}

func (h *harness) read(ctx context.Context) (committed, end int64, caughtUp, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if groups, err := h.adm.DescribeGroups(ctx, h.cfg.ApplicationID); err == nil {
		state := groups[h.cfg.ApplicationID].State
		h.mu.Lock()
		if h.groupState == "Stable" && (state == "PreparingRebalance" || state == "CompletingRebalance") {
			h.rep.Rebalances++
		}
		h.groupState = state
		h.mu.Unlock()
	}
	ends, err := h.adm.ListEndOffsets(ctx, h.cfg.InputTopics...)
	if err != nil {
		return 0, 0, false, false
	}
	offsets, err := h.adm.FetchOffsets(ctx, h.cfg.ApplicationID)
	if err != nil {
		return 0, 0, false, false
	}
	caughtUp, ok = true, true
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			ok = false
			return
		}
		at := int64(0)
		if c, ok := offsets.Lookup(o.Topic, o.Partition); ok && c.Err == nil {
			at = max(c.At, 0)
		}
		end += o.Offset
		committed += min(at, o.Offset)
		caughtUp = caughtUp && at >= o.Offset
	})
	return committed, end, caughtUp, ok
}

// startBroker starts the owned broker and waits until it accepts
// connections.
func (h *harness) startBroker(ctx context.Context) error {
	dataDir := filepath.Join(h.dir, "broker-data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	args := expand(h.cfg.BrokerCommand, map[string]string{"listen": h.listen, "data-dir": dataDir})
	logFile := filepath.Join(h.dir, brokerName+".log")
	h.procs.Set(brokerName, fleet.Spec{Path: args[0], Args: args[1:], Log: logFile})
	if err := h.procs.Start(brokerName); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", h.listen, time.Second)
		if err == nil {
			conn.Close()
			h.log.Info("broker listening", "addr", h.listen)
			return nil
		}
		if !h.procs.Running(brokerName) || time.Now().After(deadline) || !sleep(ctx, 50*time.Millisecond) {
			return fmt.Errorf("chaos: the broker (%s) does not listen on %s; its log %s ends:\n%s", strings.Join(args, " "), h.listen, logFile, tail(logFile, 15))
		}
	}
}

// createTopics creates the configured topics that do not exist.
func (h *harness) createTopics(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, t := range h.cfg.Topics {
		parts := t.Partitions
		if parts == 0 {
			parts = h.cfg.Partitions
		}
		configs := map[string]*string{}
		for k, v := range t.Configs {
			configs[k] = &v
		}
		resp, err := h.adm.CreateTopic(ctx, parts, -1, configs, t.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("chaos: create topic %s on %s: %w", t.Name, strings.Join(h.brokers, ","), err)
		}
	}
	return nil
}
