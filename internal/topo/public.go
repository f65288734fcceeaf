package topo

// Of returns the topology inside an *exactly.Topology, which it takes as
// any because this package cannot name package exactly's types. Package
// exactly sets it when it is initialised. It lets the runtime packages of
// this module (the test driver, the verifier) reach the graph of a
// topology their callers hand them, without the public type exposing an
// internal one.
var Of func(topology any) *Topology
