// Package exactly builds and runs stream-processing topologies on Kafka with
// exactly-once semantics: typed sources, processors and sinks, named state
// stores whose local copies never hold uncommitted data, stream-time and
// wall-clock punctuators, and dead-letter handling for records that cannot be
// processed.
package exactly
