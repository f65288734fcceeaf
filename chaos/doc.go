// Package chaos runs a stream application under a seeded schedule of
// faults and then proves that its committed result holds: it
// is the library behind `exactly chaos`, for a user's own binary as much
// as for the reference applications.
//
// A run, as [Run] carries it out:
//
//  1. Starts a broker as a child process it owns ([Config.BrokerCommand],
//     with a data directory, so that it can be killed for real and started
//     again on the same port), or uses a running cluster ([Config.Brokers]).
//  2. Creates the topics and starts [Config.Instances] instances of any
//     command line ([Config.Command]); each learns the brokers, its slot,
//     its state directory and a free HTTP address from placeholders in its
//     arguments and from EXACTLY_* environment variables ([Placeholders]).
//  3. Produces the input ([OrdersInput], [KeyedInput], or nothing when
//     the input topic is filled already) at an even pace over
//     [Config.Duration] while it carries out the schedule
//     ([Config.Schedule]): SIGKILLs of instances (started again after a
//     moment), zombies (SIGSTOP past the session timeout, then SIGCONT),
//     broker SIGKILLs and restarts, and instances added and removed
//     (rebalance storms). An instance that exits on its own is started
//     again, as an orchestrator would, and counted.
//  4. Waits until the application's consumer group has committed the whole
//     input, stops the instances gracefully, and runs the verifiers
//     ([Replay] for any deterministic topology, [OrdersAudit] for the orders
//     application, [Command] for a program of the user's).
//
// The [Report] counts kills, zombies, broker restarts, instance changes,
// rebalances, records in and out, and the duplicates, lost and different
// records each verifier found; [Report.OK] holds only if the group caught
// up and every verifier passed.
package chaos
