package exactly

import (
	"github.com/exactly-go/exactly/internal/kafka"
	"github.com/exactly-go/exactly/internal/task"
)

// ErrStateDirLocked is wrapped by the error Run returns when another
// instance, in this process or another, holds the state directory
// (Config.StateDir/Config.ApplicationID). Two instances must never share
// stores: give each its own StateDir, or stop the other one first.
var ErrStateDirLocked = kafka.ErrStateDirLocked

// ConfigError is a configuration that no retry can cure. [New] returns one
// for an invalid [Config] (a missing Brokers or ApplicationID, an unknown
// Guarantee, OnFatalError or SASL mechanism); Run returns one when the
// cluster refuses the configuration (a SessionTimeout outside the brokers'
// bounds, credentials or ACLs that do not allow the group, topics or
// transactional ids). Its message says what to change; Unwrap gives the
// underlying error, such as the broker's. Find it with errors.As.
//
// It is an alias so that the runtime returns it without conversion.
type ConfigError = kafka.ConfigError

// ApplicationShutdownError is returned by Run on every instance of an
// application when one instance's fatal error shut the application down
// ([ShutdownApplication]). Its field Cause is that fatal error on the
// instance that asked for the shutdown, and nil on the instances that were
// asked; Unwrap returns Cause.
type ApplicationShutdownError = kafka.ApplicationShutdownError

// PunctuatorError is a punctuator that returned an error or panicked; it is
// a fatal error (Config.OnFatalError). Its fields name the task (Task), the
// processor that scheduled it (Node), its clock (Type), the time it fired
// at in epoch milliseconds (Time) and the error (Err, which Unwrap
// returns).
type PunctuatorError = task.PunctuatorError
