package kafka

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly/internal/tracing"
)

// commitSpan is the span of one commit; nil when tracing is off, and then
// its methods do nothing.
type commitSpan struct {
	span   trace.Span
	result string
}

// traceCommit starts the span of a commit of parts, holding records input
// records.
func (w *worker) traceCommit(ctx context.Context, parts []*pendingCommit, records int) *commitSpan {
	tracer := tracing.Tracer(w.r.cfg.TracerProvider)
	if tracer == nil {
		return nil
	}
	var tasks, outputs, changelog int
	for _, p := range parts {
		if !p.c.Empty() {
			tasks++
		}
		outputs += len(p.c.Outputs)
		for _, sc := range p.c.Changelogs {
			changelog += len(sc.Changes)
		}
	}
	span := tracing.StartCommit(ctx, tracer, tracing.Commit{
		ApplicationID: w.r.cfg.ApplicationID,
		Tasks:         tasks, Records: records, Outputs: outputs, ChangelogRecords: changelog,
	})
	return &commitSpan{span: span}
}

// aborted records that the commit's work was discarded, to be redone;
// unknown that its outcome was lost.
func (s *commitSpan) aborted() {
	if s != nil {
		s.result = "aborted"
	}
}

func (s *commitSpan) unknown() {
	if s != nil {
		s.result = "unknown"
	}
}

// end ends the span with the commit's result and error.
func (s *commitSpan) end(err error) {
	if s != nil {
		tracing.EndCommit(s.span, s.result, err)
	}
}

// restoreTraced restores the task's stores (restore) inside a span of its
// own when tracing is on.
func (w *worker) restoreTraced(ctx context.Context, lt *liveTask) error {
	tracer := tracing.Tracer(w.r.cfg.TracerProvider)
	if tracer == nil {
		return w.restore(ctx, lt)
	}
	logged := 0
	for _, name := range lt.task.Stores() {
		if spec, _ := w.r.topo.Store(name); spec.Logged {
			logged++
		}
	}
	ctx, span := tracer.Start(ctx, "restore", trace.WithAttributes(
		semconv.MessagingSystemKafka,
		semconv.MessagingConsumerGroupName(w.r.cfg.ApplicationID),
		tracing.KeyTask.String(lt.id.String()),
		tracing.KeyRestoreStores.Int(logged),
	))
	defer span.End()
	err := w.restore(ctx, lt)
	span.SetAttributes(tracing.KeyRestoreRecords.Int64(lt.restored))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "restore failed")
	}
	return err
}
