package main

import (
	"os"
	"os/exec"
	"testing"
)

// TestKcatProducesAndReadsCommittedProjections runs scripts/kcat-e2e.sh with
// this test binary standing in for the exactly program: kcat, a client not
// written in Go, produces order events and reads the projections of two
// `exactly run orders` instances with read_committed.
func TestKcatProducesAndReadsCommittedProjections(t *testing.T) {
	cmd := exec.Command("bash", "../../scripts/kcat-e2e.sh")
	cmd.Env = append(os.Environ(), "EXACTLY="+os.Args[0], "EXACTLYTEST_AS_COMMAND=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatal(err)
	}
}
