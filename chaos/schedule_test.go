package chaos

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestScheduleIsAPureFunctionOfItsConfiguration: equal configurations give
// equal schedules, another seed another one, and each kind has its count.
func TestScheduleIsAPureFunctionOfItsConfiguration(t *testing.T) {
	cfg := Config{Seed: 7, Duration: time.Minute, Kills: 40, Zombies: 3, BrokerRestarts: 2, Churn: 25}
	a, b := cfg.Schedule(), cfg.Schedule()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two schedules of one configuration differ")
	}
	cfg.Seed = 8
	if reflect.DeepEqual(a, cfg.Schedule()) {
		t.Fatal("seeds 7 and 8 give the same schedule")
	}
	count := map[EventKind]int{}
	for i, ev := range a {
		count[ev.Kind]++
		if ev.At < 0 || ev.At > cfg.Duration {
			t.Errorf("event %d at %s, outside the run's %s", i, ev.At, cfg.Duration)
		}
		if i > 0 && ev.At < a[i-1].At {
			t.Errorf("event %d at %s comes before event %d at %s", i, ev.At, i-1, a[i-1].At)
		}
	}
	if count[Kill] != 40 || count[Freeze] != 3 || count[BrokerRestart] != 2 || count[AddInstance]+count[RemoveInstance] != 25 {
		t.Fatalf("counts %v; want 40 kills, 3 freezes, 2 broker restarts, 25 instance changes", count)
	}
}

// TestChurnKeepsTheInstanceCountBetweenItsBoundsEveryOneToThreeSeconds:
// a rebalance storm of 20 changes over 40 s changes membership every 1 to
// 3 s, and never runs fewer than Instances-1 nor more than MaxInstances.
func TestChurnKeepsTheInstanceCountBetweenItsBoundsEveryOneToThreeSeconds(t *testing.T) {
	for seed := range uint64(20) {
		cfg := Config{Seed: seed, Duration: 40 * time.Second, Instances: 3, Churn: 20}
		running, last := 3, time.Duration(-1)
		for _, ev := range cfg.Schedule() {
			switch ev.Kind {
			case AddInstance:
				running++
			case RemoveInstance:
				running--
			default:
				continue
			}
			if running < 2 || running > 5 {
				t.Fatalf("seed %d: %d instances at %s; want 2 to 5", seed, running, ev.At)
			}
			if gap := ev.At - last; last >= 0 && (gap < time.Second || gap > 3*time.Second) {
				t.Fatalf("seed %d: %s between membership changes at %s; want 1 to 3 s", seed, gap, ev.At)
			}
			last = ev.At
		}
	}
}

// TestPlaceholdersReachArgumentsAndEnvironment: every placeholder of an
// instance's command line is replaced, unknown braces stay, and each value
// is also in its EXACTLY_* variable.
func TestPlaceholdersReachArgumentsAndEnvironment(t *testing.T) {
	cfg, err := Config{Command: []string{"app"}, ApplicationID: "shop", Brokers: []string{"b:1"}, InputTopics: []string{"in"},
		Verifiers: []Verifier{Command("true")}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	vars := cfg.instanceVars([]string{"h1:9092", "h2:9092"}, 2, "/state/2", "127.0.0.1:8081")
	got := expand([]string{"--brokers={brokers}", "{application-id}/{instance}", "{instance-id}", "{state-dir}", "{http}",
		"{session-timeout}", "{partitions}", "{unknown}"}, vars)
	want := []string{"--brokers=h1:9092,h2:9092", "shop/2", "shop-2", "/state/2", "127.0.0.1:8081", "3s", "4", "{unknown}"}
	if !slices.Equal(got, want) {
		t.Fatalf("expanded to %q; want %q", got, want)
	}
	env := environ(vars)
	for _, p := range Placeholders {
		want := p.Env + "=" + expand([]string{p.Name}, vars)[0]
		if !slices.Contains(env, want) {
			t.Errorf("environment lacks %s: %q", want, env)
		}
	}
	if len(env) != len(Placeholders) {
		t.Errorf("environment %q has other variables than the placeholders'", env)
	}
}

// TestConfigErrorsSayWhatToGive: a configuration that cannot run names
// every missing piece at once.
func TestConfigErrorsSayWhatToGive(t *testing.T) {
	_, err := Config{Brokers: []string{"b:1"}, BrokerRestarts: 1, ZombieFor: time.Second}.withDefaults()
	if err == nil {
		t.Fatal("an empty configuration was accepted")
	}
	for _, want := range []string{"no Command", "BrokerRestarts needs a broker the harness owns", "no InputTopics", "no Verifiers", "ZombieFor 1s must exceed SessionTimeout 3s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
