//go:build !race

package kafka

// raceEnabled reports whether the race detector is on.
const raceEnabled = false
