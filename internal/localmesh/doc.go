// Package localmesh runs a whole mesh on one machine without root, a
// cluster or containers: the control plane, and one proxy for every
// WorkloadEntry whose address is on loopback (127.0.0.0/8 is all local on
// Linux, so each proxy binds Istio's standard ports on its own address).
// It is the engine behind `trellis up`.
//
// Proxies follow the config: a WorkloadEntry added while the mesh runs gets
// a proxy, a removed one has its proxy drained and stopped. Which apps run
// behind the proxies is the caller's business (the demo's, or the user's).
package localmesh
