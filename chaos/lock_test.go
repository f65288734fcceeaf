package chaos

import (
	"strings"
	"testing"
)

// TestTwoRunsCannotShareADirectory: the second run's lock is refused,
// naming the directory, and it is free again once the first lets go.
func TestTwoRunsCannotShareADirectory(t *testing.T) {
	dir := t.TempDir()
	first, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDir(dir); err == nil || !strings.Contains(err.Error(), dir+" is in use by another run") {
		t.Fatalf("second lock: %v; want it refused, naming the directory", err)
	}
	first.Close()
	second, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lock after the first run ended: %v", err)
	}
	second.Close()
}
