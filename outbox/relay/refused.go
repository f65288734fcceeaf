package relay

import (
	"errors"

	"github.com/exactly-go/exactly/internal/wire"
)

// ReasonProduction is the exactly.error.reason of a row the broker refused
// for good (the same as exactly.ReasonProduction).
const ReasonProduction = wire.ReasonProduction

// ErrRowRefused is wrapped by Run's error when the broker refuses an outbox
// row for good and the relay has no DeadLetterTopic.
var ErrRowRefused = errors.New("the broker refuses the outbox row for good")
