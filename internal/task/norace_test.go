//go:build !race

package task_test

// raceEnabled reports whether the race detector is on.
const raceEnabled = false
